//! DescribeUserScramCredentials (50) and AlterUserScramCredentials (51): the users of the
//! cluster metadata as Kafka's admin clients see and change them. An upsertion carries a salted
//! password (the client salts and hashes; the password never travels); the listener derives the
//! credential's keys from it and hands only those to the controller.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use quipu_meta::acls::Operation;
use quipu_meta::{ScramMechanism, Users};
use quipu_node::{ControllerRequest, Principal};

use crate::admin::{Refusal, cluster_denied, from_controller, text};
use crate::authorize;
use crate::server::Context;

fn infos(
    credentials: &BTreeMap<ScramMechanism, quipu_meta::ScramCredential>,
) -> Vec<CredentialInfo> {
    credentials
        .iter()
        .map(|(mechanism, credential)| {
            CredentialInfo::default()
                .with_mechanism(mechanism.kafka_type())
                .with_iterations(i32::try_from(credential.iterations).unwrap_or(i32::MAX))
        })
        .collect()
}

/// DescribeUserScramCredentials: every user (no list), or each named one.
pub(crate) fn describe(
    context: &Context,
    who: &Principal,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !authorize::cluster(context, who, Operation::Describe) {
        let (code, message) = cluster_denied();
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(text(message)));
    }
    let users: Users = context.node.with_metadata(|m| m.users().clone());
    let results = match request.users {
        None => users
            .iter()
            .map(|(user, credentials)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(text(user.clone()))
                    .with_credential_infos(infos(credentials))
            })
            .collect(),
        Some(named) => {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for user in &named {
                *seen.entry(user.name.to_string()).or_default() += 1;
            }
            named
                .iter()
                .map(|user| {
                    let name = user.name.to_string();
                    let result =
                        DescribeUserScramCredentialsResult::default().with_user(user.name.clone());
                    if seen[&name] > 1 {
                        return result
                            .with_error_code(ResponseError::DuplicateResource.code())
                            .with_error_message(Some(StrBytes::from_static_str(
                                "the user is named more than once",
                            )));
                    }
                    match users.get(&name) {
                        Some(credentials) => result.with_credential_infos(infos(credentials)),
                        None => result
                            .with_error_code(ResponseError::ResourceNotFound.code())
                            .with_error_message(Some(text(format!(
                                "attempt to describe a user credential that does not exist: {}",
                                quipu_meta::shown(&name)
                            )))),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// One change of an AlterUserScramCredentials request, planned.
enum Change {
    Upsert(ScramMechanism, quipu_meta::ScramCredential),
    Delete(ScramMechanism),
}

fn refused(code: ResponseError, message: String) -> Refusal {
    (code, message)
}

fn mechanism_of(number: i8) -> Result<ScramMechanism, Refusal> {
    ScramMechanism::from_kafka_type(number).ok_or_else(|| {
        refused(
            ResponseError::UnsupportedSaslMechanism,
            format!("unknown SCRAM mechanism {number}"),
        )
    })
}

/// AlterUserScramCredentials: each user's changes go to the controller in order; a user named
/// twice for the same mechanism is refused whole (DUPLICATE_RESOURCE), as Kafka does.
pub(crate) async fn alter(
    context: &Context,
    who: &Principal,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let allowed = authorize::cluster(context, who, Operation::Alter);
    let mut by_user: BTreeMap<String, Vec<Result<Change, Refusal>>> = BTreeMap::new();
    let mut pairs: HashSet<(String, i8)> = HashSet::new();
    let mut duplicated: HashSet<String> = HashSet::new();
    for deletion in &request.deletions {
        let user = deletion.name.to_string();
        if !pairs.insert((user.clone(), deletion.mechanism)) {
            duplicated.insert(user.clone());
        }
        by_user
            .entry(user)
            .or_default()
            .push(mechanism_of(deletion.mechanism).map(Change::Delete));
    }
    for upsertion in &request.upsertions {
        let user = upsertion.name.to_string();
        if !pairs.insert((user.clone(), upsertion.mechanism)) {
            duplicated.insert(user.clone());
        }
        let change = mechanism_of(upsertion.mechanism).and_then(|mechanism| {
            let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
            if !(quipu_meta::ITERATIONS_MIN..=quipu_meta::ITERATIONS_MAX).contains(&iterations) {
                return Err(refused(
                    ResponseError::UnacceptableCredential,
                    format!(
                        "{} iterations is out of range: {} to {}",
                        upsertion.iterations,
                        quipu_meta::ITERATIONS_MIN,
                        quipu_meta::ITERATIONS_MAX
                    ),
                ));
            }
            if upsertion.salted_password.len() != mechanism.hash_len() {
                return Err(refused(
                    ResponseError::UnacceptableCredential,
                    format!(
                        "a {} salted password is {} bytes, not {}",
                        mechanism.name(),
                        mechanism.hash_len(),
                        upsertion.salted_password.len()
                    ),
                ));
            }
            let credential = quipu_auth::credential_from_salted(
                mechanism,
                &upsertion.salted_password,
                &upsertion.salt,
                iterations,
            );
            credential
                .check(mechanism)
                .map_err(|e| refused(ResponseError::UnacceptableCredential, e.to_string()))?;
            Ok(Change::Upsert(mechanism, credential))
        });
        by_user.entry(user).or_default().push(change);
    }
    let mut results = Vec::new();
    for (user, changes) in by_user {
        let outcome = if !allowed {
            Err(cluster_denied())
        } else if duplicated.contains(&user) {
            Err(refused(
                ResponseError::DuplicateResource,
                "a user's mechanism appears more than once in one request".to_owned(),
            ))
        } else if !quipu_meta::valid_user_name(&user) {
            Err(refused(
                ResponseError::UnacceptableCredential,
                "invalid user name".to_owned(),
            ))
        } else {
            apply(context, &user, changes).await
        };
        let result = AlterUserScramCredentialsResult::default().with_user(text(user));
        results.push(match outcome {
            Ok(()) => result,
            Err((code, message)) => result
                .with_error_code(code.code())
                .with_error_message(Some(text(message))),
        });
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

async fn apply(
    context: &Context,
    user: &str,
    changes: Vec<Result<Change, Refusal>>,
) -> Result<(), Refusal> {
    // Every change is checked before the first is made.
    let changes = changes.into_iter().collect::<Result<Vec<_>, _>>()?;
    for change in changes {
        let request = match change {
            Change::Upsert(mechanism, credential) => ControllerRequest::UpsertScramCredential {
                user: user.to_owned(),
                mechanism,
                credential,
            },
            Change::Delete(mechanism) => {
                let exists = context
                    .node
                    .with_metadata(|m| m.scram_credential(user, mechanism).is_some());
                if !exists {
                    return Err(refused(
                        ResponseError::ResourceNotFound,
                        format!(
                            "attempt to delete a user credential that does not exist: {} {}",
                            quipu_meta::shown(user),
                            mechanism.name()
                        ),
                    ));
                }
                ControllerRequest::DeleteScramCredential {
                    user: user.to_owned(),
                    mechanism,
                }
            }
        };
        context
            .node
            .request_controller(request)
            .await
            .map_err(from_controller)?;
    }
    Ok(())
}
