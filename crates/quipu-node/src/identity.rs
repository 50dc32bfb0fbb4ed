//! The cluster's id as this node knows it, and the stamp every transport message carries.
//!
//! Invariant: once this node knows its cluster's id it never forgets or changes it (it is kept
//! in `DATA_DIR/cluster_id`, written durably before it is used), and its transport neither
//! sends a message without the stamp nor accepts one stamped with another cluster's id. A node
//! that knows no id yet (a new node joining, a cluster not named yet) accepts any stamp and
//! sends none; it learns the id from the controller's log (`Command::SetClusterId`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The gRPC request header that carries the sender's cluster id.
pub(crate) const CLUSTER_ID_HEADER: &str = "quipu-cluster-id";
/// The file, in the data directory, that keeps the id.
pub(crate) const CLUSTER_ID_FILE: &str = "cluster_id";

/// Reading, checking or keeping the cluster id failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterIdError {
    /// The file could not be read or written.
    #[error("cannot keep the cluster id in {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: quipu_storage::StateFileError,
    },
    /// The file holds something that is not a cluster id.
    #[error("{path} does not hold a valid cluster id")]
    Invalid {
        /// The file.
        path: PathBuf,
    },
    /// The controller's log names another cluster than this node's data directory does.
    #[error(
        "this node's data directory belongs to cluster {known}, but its controller log names cluster {told}"
    )]
    Conflict {
        /// The id this node kept.
        known: String,
        /// The id it was told.
        told: String,
    },
}

/// This node's knowledge of its cluster's id. Clones share it.
#[derive(Debug, Clone)]
pub(crate) struct ClusterIdentity {
    id: Arc<OnceLock<(String, AsciiMetadataValue)>>,
    dir: PathBuf,
}

impl ClusterIdentity {
    /// What the data directory `dir` says (nothing for a new node).
    pub(crate) fn load(dir: &Path) -> Result<ClusterIdentity, ClusterIdError> {
        let identity = ClusterIdentity {
            id: Arc::new(OnceLock::new()),
            dir: dir.to_path_buf(),
        };
        let path = dir.join(CLUSTER_ID_FILE);
        let kept =
            quipu_storage::read_state_file(dir, CLUSTER_ID_FILE, quipu_meta::CLUSTER_ID_BYTES_MAX)
                .map_err(|source| ClusterIdError::File {
                    path: path.clone(),
                    source,
                })?;
        if let Some(bytes) = kept {
            let id = String::from_utf8(bytes)
                .ok()
                .filter(|id| quipu_meta::valid_cluster_id(id))
                .ok_or(ClusterIdError::Invalid { path })?;
            identity.remember(id);
        }
        Ok(identity)
    }

    fn remember(&self, id: String) {
        let value = AsciiMetadataValue::try_from(id.as_str())
            .expect("a valid cluster id is a valid header value");
        let _ = self.id.set((id, value));
    }

    /// The cluster's id, once known.
    pub(crate) fn get(&self) -> Option<&str> {
        self.id.get().map(|(id, _)| id.as_str())
    }

    /// The controller's log names the cluster `told`: kept durably on first hearing, checked
    /// against what is kept after that.
    pub(crate) fn learn(&self, told: &str) -> Result<(), ClusterIdError> {
        if let Some(known) = self.get() {
            if known == told {
                return Ok(());
            }
            return Err(ClusterIdError::Conflict {
                known: known.to_owned(),
                told: told.to_owned(),
            });
        }
        quipu_storage::write_state_file(&self.dir, CLUSTER_ID_FILE, told.as_bytes()).map_err(
            |source| ClusterIdError::File {
                path: self.dir.join(CLUSTER_ID_FILE),
                source,
            },
        )?;
        self.remember(told.to_owned());
        tracing::info!(cluster_id = told, "this node belongs to cluster {told}");
        Ok(())
    }

    /// Puts the stamp on an outgoing request (none while the id is unknown).
    pub(crate) fn stamp(&self, metadata: &mut MetadataMap) {
        if let Some((_, value)) = self.id.get() {
            metadata.insert(CLUSTER_ID_HEADER, value.clone());
        }
    }

    /// Refuses a request stamped with another cluster's id. An unstamped request passes: its
    /// sender does not know its cluster yet (it is joining this one, or this cluster was not
    /// named yet when it started).
    pub(crate) fn admit(&self, metadata: &MetadataMap) -> Result<(), tonic::Status> {
        let (Some(known), Some(stamped)) = (self.get(), metadata.get(CLUSTER_ID_HEADER)) else {
            return Ok(());
        };
        if stamped.as_bytes() == known.as_bytes() {
            return Ok(());
        }
        let shown: String = String::from_utf8_lossy(stamped.as_bytes())
            .chars()
            .take(quipu_meta::CLUSTER_ID_BYTES_MAX)
            .collect();
        Err(tonic::Status::failed_precondition(format!(
            "a message of cluster {shown:?} reached a node of cluster {known}"
        )))
    }
}

/// The gRPC interceptor that stamps every transport request with the cluster id.
#[derive(Debug, Clone)]
pub(crate) struct Stamp(pub(crate) ClusterIdentity);

impl tonic::service::Interceptor for Stamp {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.0.stamp(request.metadata_mut());
        Ok(request)
    }
}

/// A new cluster id: 128 random bits as 32 hex digits.
pub(crate) fn new_cluster_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_kept_across_restarts_and_never_changes() {
        let dir = tempfile::tempdir().unwrap();
        let identity = ClusterIdentity::load(dir.path()).unwrap();
        assert_eq!(identity.get(), None);
        let mut unstamped = MetadataMap::new();
        identity.stamp(&mut unstamped);
        assert!(unstamped.is_empty(), "no stamp while the id is unknown");
        let id = new_cluster_id();
        identity.learn(&id).unwrap();
        identity.learn(&id).unwrap();
        assert!(matches!(
            identity.learn("another"),
            Err(ClusterIdError::Conflict { .. })
        ));
        let again = ClusterIdentity::load(dir.path()).unwrap();
        assert_eq!(again.get(), Some(id.as_str()));
        let mut ours = MetadataMap::new();
        again.stamp(&mut ours);
        assert!(again.admit(&ours).is_ok());
        assert!(
            again.admit(&MetadataMap::new()).is_ok(),
            "an unstamped sender passes"
        );
        let mut theirs = MetadataMap::new();
        theirs.insert(
            CLUSTER_ID_HEADER,
            AsciiMetadataValue::from_static("another"),
        );
        let refused = again.admit(&theirs).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        // A node that knows no id yet accepts any stamp.
        assert!(identity_of_new_node().admit(&theirs).is_ok());
    }

    fn identity_of_new_node() -> ClusterIdentity {
        let dir = tempfile::tempdir().unwrap();
        ClusterIdentity::load(dir.path()).unwrap()
    }

    #[test]
    fn a_damaged_id_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        quipu_storage::write_state_file(dir.path(), CLUSTER_ID_FILE, b"not an id!").unwrap();
        assert!(matches!(
            ClusterIdentity::load(dir.path()),
            Err(ClusterIdError::Invalid { .. })
        ));
    }
}
