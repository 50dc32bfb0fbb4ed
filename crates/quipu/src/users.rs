//! `quipu user`: the users Kafka clients authenticate as (SASL SCRAM and PLAIN). A password is
//! never taken from the command line: it comes from a file (`--password-file`), the environment
//! (`QUIPU_USER_PASSWORD`) or standard input (one line), is salted and hashed here, and only the
//! salted password is sent (over the connection's TLS when the cluster has it).

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use quipu_meta::ScramMechanism;

use crate::commands::Connection;
use crate::output::out;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user, or sets a user's password.
    ///
    /// Example: QUIPU_USER_PASSWORD=s3cret quipu user create alice
    Create {
        /// The user's name.
        name: String,
        /// SCRAM-SHA-256, SCRAM-SHA-512, or both [default: both].
        #[arg(long)]
        mechanism: Option<String>,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = quipu_meta::ITERATIONS_DEFAULT)]
        iterations: u32,
        /// Reads the password from this file's first line (else QUIPU_USER_PASSWORD, else
        /// standard input).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Deletes a user's credentials (both mechanisms unless --mechanism names one).
    ///
    /// Example: quipu user delete alice
    Delete {
        /// The user's name.
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long)]
        mechanism: Option<String>,
    },
    /// Lists the users and their credentials' mechanisms and iterations.
    ///
    /// Example: quipu user list
    List,
}

fn mechanisms(name: Option<&str>) -> anyhow::Result<Vec<ScramMechanism>> {
    match name {
        None => Ok(ScramMechanism::ALL.to_vec()),
        Some(name) => Ok(vec![ScramMechanism::from_name(name).with_context(
            || format!("--mechanism {name:?} is not SCRAM-SHA-256 or SCRAM-SHA-512"),
        )?]),
    }
}

/// The password: the file's first line, else `QUIPU_USER_PASSWORD`, else a line of standard
/// input. Never from the command line, where other users of the machine could read it.
fn password(file: Option<&PathBuf>) -> anyhow::Result<String> {
    let line = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => match std::env::var("QUIPU_USER_PASSWORD") {
            Ok(password) => password,
            Err(_) => {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("cannot read the password from standard input")?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            }
        },
    };
    if line.is_empty() {
        bail!(
            "no password: give --password-file, QUIPU_USER_PASSWORD, or a line on standard input"
        );
    }
    Ok(line)
}

pub async fn user(connection: &Connection, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            name,
            mechanism,
            iterations,
            password_file,
        } => {
            let mechanisms = mechanisms(mechanism.as_deref())?;
            if !(quipu_meta::ITERATIONS_MIN..=quipu_meta::ITERATIONS_MAX).contains(&iterations) {
                bail!(
                    "--iterations {iterations} is out of range: {} to {}",
                    quipu_meta::ITERATIONS_MIN,
                    quipu_meta::ITERATIONS_MAX
                );
            }
            let password = password(password_file.as_ref())?;
            let client = connection.connect().await?;
            for mechanism in mechanisms {
                client
                    .set_user_password(&name, mechanism, password.as_bytes(), iterations)
                    .await
                    .with_context(|| {
                        format!("cannot set {name}'s {} credential", mechanism.name())
                    })?;
            }
            out!("user {name} has its password");
        }
        UserCommand::Delete { name, mechanism } => {
            let client = connection.connect().await?;
            let held: Vec<ScramMechanism> = client
                .list_users()
                .await?
                .into_iter()
                .find(|(user, _)| *user == name)
                .map(|(_, credentials)| credentials.into_iter().map(|(m, _)| m).collect())
                .unwrap_or_default();
            let wanted = mechanisms(mechanism.as_deref())?;
            let deleting: Vec<ScramMechanism> =
                wanted.into_iter().filter(|m| held.contains(m)).collect();
            if deleting.is_empty() {
                bail!("user {name} has no such credential (`quipu user list` shows them)");
            }
            for mechanism in deleting {
                client.delete_user_credential(&name, mechanism).await?;
            }
            out!("deleted credentials of {name}");
        }
        UserCommand::List => {
            let client = connection.connect().await?;
            out!("{:<32} CREDENTIALS", "USER");
            for (user, credentials) in client.list_users().await? {
                let shown: Vec<String> = credentials
                    .iter()
                    .map(|(m, iterations)| format!("{} ({iterations} iterations)", m.name()))
                    .collect();
                out!("{user:<32} {}", shown.join(", "));
            }
        }
    }
    Ok(())
}
