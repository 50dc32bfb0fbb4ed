//! `quipu group` (list, describe, delete, reset-offsets) and `quipu consume --group`: consumer
//! groups through the gRPC API, as `kafka-consumer-groups.sh` shows them.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use quipu_client::{Client, GroupConsumer, GroupConsumerConfig, StartAt};

use crate::commands::{Connection, Format, print_record};
use crate::output::out;

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Lists every consumer group with its protocol and state.
    ///
    /// Example: quipu group list
    List,
    /// Shows a group's state and members, and per partition its member, committed offset,
    /// high watermark and lag.
    ///
    /// Example: quipu group describe orders-app
    Describe { group: String },
    /// Deletes a group without members, and its committed offsets.
    ///
    /// Example: quipu group delete orders-app
    Delete { group: String },
    /// Moves a group's committed offsets (the group must have no members). Shows the plan
    /// unless --execute is given.
    ///
    /// Example: quipu group reset-offsets orders-app --topic orders --to-datetime 2026-12-01T00:00:00Z --execute
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    group: String,
    /// The topic whose offsets move.
    #[arg(long)]
    topic: String,
    /// Only this partition (default: every partition of the topic).
    #[arg(long)]
    partition: Option<u32>,
    /// To each partition's first offset.
    #[arg(long, group = "to")]
    to_earliest: bool,
    /// To each partition's end (the high watermark).
    #[arg(long, group = "to")]
    to_latest: bool,
    /// To this offset (clamped to the partition's first offset and end).
    #[arg(long, group = "to")]
    to_offset: Option<u64>,
    /// To the first record at or after this time: RFC 3339 (2026-12-01T00:00:00Z) or
    /// @<unix-ms>.
    #[arg(long, group = "to")]
    to_datetime: Option<String>,
    /// Commit the new offsets (without it, only the plan is shown).
    #[arg(long)]
    execute: bool,
}

/// Milliseconds since the Unix epoch of an RFC 3339 time or `@<unix-ms>`.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Some(ms) = text.strip_prefix('@') {
        return ms
            .parse()
            .with_context(|| format!("{text}: @ must be followed by unix ms"));
    }
    let time = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("{text}: expected RFC 3339 (2026-12-01T00:00:00Z) or @<unix-ms>")
    })?;
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .with_context(|| format!("{text} is before 1970"))?;
    i64::try_from(since.as_millis()).context("time out of range")
}

pub async fn run(connection: &Connection, command: GroupCommand) -> anyhow::Result<()> {
    let client = connection.connect().await?;
    match command {
        GroupCommand::List => {
            out!("{:<40} {:<10} {}", "GROUP", "PROTOCOL", "STATE");
            for g in client.list_groups().await? {
                let protocol = if g.protocol.is_empty() {
                    "-"
                } else {
                    &g.protocol
                };
                out!("{:<40} {:<10} {}", g.group, protocol, g.state);
            }
        }
        GroupCommand::Describe { group } => describe(&client, &group).await?,
        GroupCommand::Delete { group } => {
            client
                .delete_group(&group)
                .await
                .with_context(|| format!("cannot delete group {group}"))?;
            out!("deleted group {group}");
        }
        GroupCommand::ResetOffsets(args) => reset(&client, args).await?,
    }
    Ok(())
}

async fn describe(client: &Client, group: &str) -> anyhow::Result<()> {
    let described = client
        .describe_group(group)
        .await
        .with_context(|| format!("cannot describe group {group}"))?;
    let protocol = if described.protocol.is_empty() {
        "-"
    } else {
        &described.protocol
    };
    out!(
        "group {group}: protocol {protocol}, state {}, epoch {}, assignor {}, {} members",
        described.state,
        described.epoch,
        if described.assignor.is_empty() {
            "-"
        } else {
            &described.assignor
        },
        described.members.len()
    );
    // Per partition: who holds it, and what the group committed.
    let mut rows: BTreeMap<(String, i32), (String, i64)> = BTreeMap::new();
    for member in &described.members {
        let who = if member.client_id.is_empty() {
            member.member_id.clone()
        } else {
            format!("{} ({})", member.client_id, member.member_id)
        };
        for t in &member.assignment {
            for p in &t.partitions {
                rows.insert((t.topic.clone(), *p), (who.clone(), -1));
            }
        }
    }
    for c in client.fetch_offsets(group, &[]).await? {
        rows.entry((c.topic, c.partition))
            .or_insert_with(|| ("-".to_string(), -1))
            .1 = c.offset;
    }
    out!(
        "{:<24} {:>9} {:>12} {:>14} {:>10}  {}",
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "HIGH-WATERMARK",
        "LAG",
        "MEMBER"
    );
    for ((topic, partition), (member, committed)) in rows {
        let end = match u32::try_from(partition) {
            Ok(p) => client.list_offsets(&topic, p, StartAt::Latest).await.ok(),
            Err(_) => None,
        };
        let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        let committed = (committed >= 0).then_some(committed);
        let end = end.and_then(|e| i64::try_from(e).ok());
        let lag = committed.zip(end).map(|(c, e)| (e - c).max(0));
        out!(
            "{:<24} {:>9} {:>12} {:>14} {:>10}  {}",
            topic,
            partition,
            show(committed),
            show(end),
            show(lag),
            member
        );
    }
    Ok(())
}

async fn reset(client: &Client, args: ResetArgs) -> anyhow::Result<()> {
    let to = if args.to_earliest {
        StartAt::Earliest
    } else if args.to_latest {
        StartAt::Latest
    } else if let Some(offset) = args.to_offset {
        StartAt::Offset(offset)
    } else if let Some(time) = &args.to_datetime {
        StartAt::Timestamp(parse_time(time)?)
    } else {
        bail!("say where to: --to-earliest, --to-latest, --to-offset N or --to-datetime TIME");
    };
    let plan = client
        .plan_offset_reset(&args.group, &args.topic, args.partition, to)
        .await
        .with_context(|| format!("cannot plan the reset of group {}", args.group))?;
    out!(
        "{:<24} {:>9} {:>12} {:>12}",
        "TOPIC",
        "PARTITION",
        "CURRENT",
        "NEW"
    );
    for step in &plan {
        let current = step
            .current
            .map_or_else(|| "-".to_string(), |c| c.to_string());
        out!(
            "{:<24} {:>9} {:>12} {:>12}",
            args.topic,
            step.partition,
            current,
            step.target
        );
    }
    if !args.execute {
        out!("(dry run: add --execute to commit these offsets)");
        return Ok(());
    }
    let results = client
        .reset_offsets(&args.group, &args.topic, &plan)
        .await
        .with_context(|| {
            format!(
                "cannot reset the offsets of group {} (it must have no members)",
                args.group
            )
        })?;
    if let Some(error) = results.into_iter().flatten().next() {
        bail!("an offset was not committed: {error}");
    }
    out!("committed the new offsets of group {}", args.group);
    Ok(())
}

/// `quipu consume TOPIC --group G`: consumes as a member of `group`, printing records as
/// they come and committing what was printed every second and on exit (after `num` records,
/// or Ctrl-C).
pub async fn consume(
    client: &Client,
    group: &str,
    topic: &str,
    start: StartAt,
    num: Option<u64>,
    format: Format,
) -> anyhow::Result<()> {
    let auto_offset_reset = match start {
        StartAt::Latest => StartAt::Latest,
        _ => StartAt::Earliest,
    };
    let config = GroupConsumerConfig {
        auto_offset_reset,
        auto_commit_interval: Some(Duration::from_secs(1)),
        client_id: "quipu-cli".to_string(),
        ..GroupConsumerConfig::new(group, &[topic])
    };
    let mut consumer = GroupConsumer::join(client, config)
        .await
        .with_context(|| format!("cannot join group {group}"))?;
    let limit = num.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut stdout = std::io::BufWriter::new(std::io::stdout());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'consume: while printed < limit {
        let records = tokio::select! {
            records = consumer.poll(usize::try_from(limit - printed).unwrap_or(usize::MAX).min(10_000)) => records.with_context(|| format!("cannot consume {topic} in group {group}"))?,
            _ = &mut ctrl_c => break 'consume,
        };
        for record in records {
            if printed == limit {
                break;
            }
            print_record(&mut stdout, &record, format)?;
            printed += 1;
        }
        stdout.flush().context("cannot write to standard output")?;
    }
    stdout.flush().context("cannot write to standard output")?;
    consumer
        .close()
        .await
        .with_context(|| format!("cannot leave group {group}"))?;
    Ok(())
}
