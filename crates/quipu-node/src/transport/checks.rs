//! What every Raft message must satisfy before openraft sees it: values no correct peer can
//! send are refused, never stored. A term must fit a Kafka leader epoch (an i32: a batch's
//! partition leader epoch is the Raft term), the vote must be the sender's own, log ids may not
//! carry a term above the sender's, the entries of an append follow each other, and a
//! snapshot chunk stays inside the largest snapshot this group accepts. The sender must also be
//! a member of the group as this replica (or the controller's metadata) knows it.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{LogId, Vote};
use quipu_raft::{NodeId, TypeConfig};
use tonic::Status;

use crate::GroupId;

/// Highest Raft term a message may carry: terms are Kafka leader epochs, which are i32.
pub(crate) const TERM_MAX: u64 = i32::MAX as u64;

fn refuse(group: GroupId, from: NodeId, what: &str) -> Status {
    Status::invalid_argument(format!(
        "refused a raft message of group {group} from node {from}: {what}"
    ))
}

/// The vote a message carries is the sender's own, with a possible term.
fn check_vote(group: GroupId, from: NodeId, vote: &Vote<NodeId>) -> Result<u64, Status> {
    let term = vote.leader_id.term;
    if term > TERM_MAX {
        return Err(refuse(
            group,
            from,
            &format!("term {term} is above the highest possible ({TERM_MAX})"),
        ));
    }
    if vote.leader_id.voted_for != Some(from) {
        return Err(refuse(
            group,
            from,
            &format!("it carries a vote for node {:?}", vote.leader_id.voted_for),
        ));
    }
    Ok(term)
}

/// A log id the sender holds: never of a term above the sender's vote.
fn check_log_id(
    group: GroupId,
    from: NodeId,
    id: Option<&LogId<NodeId>>,
    term: u64,
    what: &str,
) -> Result<(), Status> {
    match id {
        Some(id) if id.leader_id.term > term => Err(refuse(
            group,
            from,
            &format!("its {what} {id} has a term above the sender's ({term})",),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn check_append(
    group: GroupId,
    from: NodeId,
    rpc: &AppendEntriesRequest<TypeConfig>,
) -> Result<(), Status> {
    let term = check_vote(group, from, &rpc.vote)?;
    check_log_id(
        group,
        from,
        rpc.prev_log_id.as_ref(),
        term,
        "previous log id",
    )?;
    check_log_id(group, from, rpc.leader_commit.as_ref(), term, "commit")?;
    let mut expected = rpc
        .prev_log_id
        .map_or(Some(0), |id| id.index.checked_add(1));
    for entry in &rpc.entries {
        check_log_id(group, from, Some(&entry.log_id), term, "entry")?;
        if Some(entry.log_id.index) != expected {
            return Err(refuse(
                group,
                from,
                &format!(
                    "entry {} does not follow the one before it (expected index {expected:?})",
                    entry.log_id
                ),
            ));
        }
        expected = entry.log_id.index.checked_add(1);
    }
    Ok(())
}

pub(crate) fn check_vote_request(
    group: GroupId,
    from: NodeId,
    rpc: &VoteRequest<NodeId>,
) -> Result<(), Status> {
    let term = check_vote(group, from, &rpc.vote)?;
    check_log_id(group, from, rpc.last_log_id.as_ref(), term, "last log id")
}

pub(crate) fn check_snapshot(
    group: GroupId,
    from: NodeId,
    rpc: &InstallSnapshotRequest<TypeConfig>,
) -> Result<(), Status> {
    let term = check_vote(group, from, &rpc.vote)?;
    check_log_id(
        group,
        from,
        rpc.meta.last_log_id.as_ref(),
        term,
        "snapshot's last log id",
    )?;
    let max = if group == GroupId::CONTROLLER {
        quipu_raft::CONTROLLER_SNAPSHOT_BYTES_MAX
    } else {
        quipu_raft::PARTITION_SNAPSHOT_BYTES_MAX
    };
    let end = u64::try_from(rpc.data.len())
        .ok()
        .and_then(|len| rpc.offset.checked_add(len));
    if end.is_none_or(|end| end > max as u64) {
        return Err(refuse(
            group,
            from,
            &format!(
                "a snapshot chunk of {} bytes at offset {} ends past the largest snapshot ({max} bytes)",
                rpc.data.len(),
                rpc.offset
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    use super::*;

    fn vote(term: u64, node: NodeId) -> Vote<NodeId> {
        Vote::new_committed(term, node)
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn append(
        term: u64,
        prev: Option<(u64, u64)>,
        entries: &[(u64, u64)],
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: vote(term, 1),
            prev_log_id: prev.map(|(t, i)| LogId::new(CommittedLeaderId::new(t, 1), i)),
            entries: entries.iter().map(|(t, i)| entry(*t, *i)).collect(),
            leader_commit: None,
        }
    }

    #[test]
    fn a_correct_append_passes() {
        let group = GroupId(7);
        check_append(group, 1, &append(3, None, &[(1, 0), (3, 1)])).unwrap();
        check_append(group, 1, &append(3, Some((2, 9)), &[(3, 10), (3, 11)])).unwrap();
        check_append(group, 1, &append(3, Some((2, 9)), &[])).unwrap();
    }

    #[test]
    fn impossible_appends_are_refused() {
        let group = GroupId(7);
        let too_high = TERM_MAX + 1;
        for bad in [
            append(too_high, None, &[]),
            append(3, Some((4, 9)), &[]),
            append(3, None, &[(4, 0)]),
            append(3, None, &[(3, 1)]),
            append(3, Some((3, 9)), &[(3, 10), (3, 12)]),
            append(3, Some((3, u64::MAX)), &[(3, 0)]),
        ] {
            let refused = check_append(group, 1, &bad).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        // Another node's vote.
        assert!(check_append(group, 2, &append(3, None, &[])).is_err());
    }

    #[test]
    fn a_vote_with_a_term_above_an_epoch_or_for_another_node_is_refused() {
        let group = GroupId(0);
        let request = |term, node, last: Option<u64>| VoteRequest {
            vote: Vote::new(term, node),
            last_log_id: last.map(|t| LogId::new(CommittedLeaderId::new(t, 1), 5)),
        };
        check_vote_request(group, 2, &request(TERM_MAX, 2, Some(3))).unwrap();
        assert!(check_vote_request(group, 2, &request(TERM_MAX + 1, 2, None)).is_err());
        assert!(check_vote_request(group, 2, &request(u64::MAX, 2, None)).is_err());
        assert!(check_vote_request(group, 2, &request(4, 3, None)).is_err());
        assert!(check_vote_request(group, 2, &request(4, 2, Some(5))).is_err());
    }

    #[test]
    fn a_snapshot_chunk_past_the_largest_snapshot_is_refused() {
        let chunk = |offset: u64, len: usize| InstallSnapshotRequest::<TypeConfig> {
            vote: vote(2, 1),
            meta: openraft::SnapshotMeta::default(),
            offset,
            data: vec![0; len],
            done: false,
        };
        let group = GroupId(3);
        check_snapshot(group, 1, &chunk(0, 1024)).unwrap();
        let max = quipu_raft::PARTITION_SNAPSHOT_BYTES_MAX as u64;
        check_snapshot(group, 1, &chunk(max - 10, 10)).unwrap();
        assert!(check_snapshot(group, 1, &chunk(max - 10, 11)).is_err());
        assert!(check_snapshot(group, 1, &chunk(1 << 44, 1)).is_err());
        assert!(check_snapshot(group, 1, &chunk(u64::MAX, 1)).is_err());
        // The controller's snapshots may be larger.
        check_snapshot(GroupId::CONTROLLER, 1, &chunk(max, 1)).unwrap();
    }
}
