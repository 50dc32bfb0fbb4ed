//! [`TopicConfig`]: a topic's settings by their Kafka names, each checked against its range.
//!
//! Invariants: a `TopicConfig` holds only keys Quipu implements, each with a value in its range,
//! written in canonical form (a decimal number, or for `message.timestamp.type` Kafka's name of
//! the value); a key that is absent takes the node's default
//! ([`TopicSettings`]). An unknown key or a value out of range is refused, never kept unused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A topic setting Quipu implements, named as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TopicKey {
    /// `retention.ms`: segments whose newest record is older than this go (-1: unlimited).
    RetentionMs,
    /// `retention.bytes`: oldest segments go while a partition holds more (-1: unlimited).
    RetentionBytes,
    /// `segment.bytes`: a segment is sealed before it would grow past this.
    SegmentBytes,
    /// `segment.ms`: a segment older than this is sealed at the next append.
    SegmentMs,
    /// `max.message.bytes`: the largest record batch a producer may send.
    MaxMessageBytes,
    /// `message.timestamp.before.max.ms`: how far in the past a record's timestamp may be.
    TimestampBeforeMaxMs,
    /// `message.timestamp.after.max.ms`: how far in the future a record's timestamp may be.
    TimestampAfterMaxMs,
    /// `message.timestamp.type`: `CreateTime` (the producer's timestamps) or `LogAppendTime`
    /// (the leader stamps each batch with its clock on append); 0 and 1 in numeric form.
    TimestampType,
}

/// `message.timestamp.type`'s values, by their numeric form.
const TIMESTAMP_TYPES: [&str; 2] = ["CreateTime", "LogAppendTime"];

/// Smallest `segment.bytes` (and server `log.segment_bytes_max`): smaller segments only multiply
/// files and memory maps.
pub const SEGMENT_BYTES_MIN: i64 = 64 * 1024;

/// Largest `segment.bytes` and `max.message.bytes`: Kafka declares both as 32-bit ints.
pub const INT_MAX: i64 = i32::MAX as i64;

/// At most this many characters of a client's key or value are repeated in an error.
const ECHO_CHARS_MAX: usize = 64;

/// What values a key takes: a range, and whether -1 means unlimited.
#[derive(Debug, Clone, Copy)]
struct Range {
    min: i64,
    max: i64,
    unlimited: bool,
    unit: &'static str,
}

impl TopicKey {
    /// Every key, in the order they are shown.
    pub const ALL: [TopicKey; 8] = [
        TopicKey::MaxMessageBytes,
        TopicKey::TimestampAfterMaxMs,
        TopicKey::TimestampBeforeMaxMs,
        TopicKey::TimestampType,
        TopicKey::RetentionBytes,
        TopicKey::RetentionMs,
        TopicKey::SegmentBytes,
        TopicKey::SegmentMs,
    ];

    /// Its Kafka name.
    pub fn name(self) -> &'static str {
        match self {
            TopicKey::RetentionMs => "retention.ms",
            TopicKey::RetentionBytes => "retention.bytes",
            TopicKey::SegmentBytes => "segment.bytes",
            TopicKey::SegmentMs => "segment.ms",
            TopicKey::MaxMessageBytes => "max.message.bytes",
            TopicKey::TimestampBeforeMaxMs => "message.timestamp.before.max.ms",
            TopicKey::TimestampAfterMaxMs => "message.timestamp.after.max.ms",
            TopicKey::TimestampType => "message.timestamp.type",
        }
    }

    /// The key of that Kafka name, if Quipu implements it.
    pub fn from_name(name: &str) -> Option<TopicKey> {
        TopicKey::ALL.into_iter().find(|key| key.name() == name)
    }

    /// The server setting (`deploy/quipu.toml`) a topic without this key takes its value from.
    pub fn server_key(self) -> &'static str {
        match self {
            TopicKey::RetentionMs => "log.retention_ms",
            TopicKey::RetentionBytes => "log.retention_bytes",
            TopicKey::SegmentBytes => "log.segment_bytes_max",
            TopicKey::SegmentMs => "log.segment_ms_max",
            TopicKey::MaxMessageBytes => "log.entry_bytes_max",
            TopicKey::TimestampBeforeMaxMs => "log.message_timestamp_before_max_ms",
            TopicKey::TimestampAfterMaxMs => "log.message_timestamp_after_max_ms",
            TopicKey::TimestampType => "log.message_timestamp_type",
        }
    }

    fn range(self) -> Range {
        let (min, max, unlimited, unit) = match self {
            TopicKey::RetentionMs => (1, i64::MAX, true, "ms"),
            TopicKey::RetentionBytes => (1, i64::MAX, true, "bytes"),
            TopicKey::SegmentBytes => (SEGMENT_BYTES_MIN, INT_MAX, false, "bytes"),
            TopicKey::SegmentMs => (1, i64::MAX, false, "ms"),
            TopicKey::MaxMessageBytes => (1, INT_MAX, false, "bytes"),
            TopicKey::TimestampBeforeMaxMs | TopicKey::TimestampAfterMaxMs => {
                (0, i64::MAX, false, "ms")
            }
            TopicKey::TimestampType => (0, 1, false, ""),
        };
        Range {
            min,
            max,
            unlimited,
            unit,
        }
    }

    /// The values this key takes, in words.
    pub fn allowed(self) -> String {
        if self == TopicKey::TimestampType {
            return TIMESTAMP_TYPES.join(" or ");
        }
        let range = self.range();
        let span = format!("{} to {} {}", range.min, range.max, range.unit);
        if range.unlimited {
            format!("-1 (unlimited) or {span}")
        } else {
            span
        }
    }

    /// Whether `value` is in this key's range.
    pub fn check(self, value: i64) -> Result<(), TopicConfigError> {
        let range = self.range();
        if (range.unlimited && value == -1) || (range.min..=range.max).contains(&value) {
            Ok(())
        } else {
            Err(TopicConfigError::OutOfRange {
                key: self.name(),
                value: value.to_string(),
                allowed: self.allowed(),
            })
        }
    }

    /// Parses and checks a value given as text.
    pub fn parse(self, text: &str) -> Result<i64, TopicConfigError> {
        let out_of_range = || TopicConfigError::OutOfRange {
            key: self.name(),
            value: shown(text),
            allowed: self.allowed(),
        };
        let value: i64 = if self == TopicKey::TimestampType {
            let at = TIMESTAMP_TYPES
                .iter()
                .position(|name| *name == text.trim())
                .ok_or_else(out_of_range)?;
            i64::try_from(at).map_err(|_| out_of_range())?
        } else {
            text.trim().parse().map_err(|_| out_of_range())?
        };
        self.check(value)?;
        Ok(value)
    }

    /// A value of this key as text, as Kafka shows it (canonical form).
    pub fn text(self, value: i64) -> String {
        match self {
            TopicKey::TimestampType => usize::try_from(value)
                .ok()
                .and_then(|at| TIMESTAMP_TYPES.get(at))
                .map_or_else(|| value.to_string(), |name| (*name).to_string()),
            _ => value.to_string(),
        }
    }
}

/// At most [`ECHO_CHARS_MAX`] characters of client input, marked when cut: what an error message
/// may repeat of what a client sent.
pub fn shown(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// A topic setting was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    /// Quipu does not implement a setting of that name.
    #[error("unknown topic config {name:?}; Quipu implements {}", known_names())]
    Unknown {
        /// The name given (cut to 64 characters).
        name: String,
    },
    /// The value is not a number in the key's range.
    #[error("topic config {key} = {value:?} is out of range: {allowed}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The value given (cut to 64 characters).
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// The value is above what the nodes allow (`max.message.bytes` above the nodes'
    /// `log.entry_bytes_max`).
    #[error("topic config {key} = {value} is above the node's {server_key} = {limit}")]
    AboveNodeLimit {
        /// The key.
        key: &'static str,
        /// The value given.
        value: i64,
        /// The server setting that bounds it.
        server_key: &'static str,
        /// Its value.
        limit: u64,
    },
}

fn known_names() -> String {
    TopicKey::ALL.map(TopicKey::name).join(", ")
}

/// A topic's own settings: the keys it sets, by Kafka name, with canonical values. Keys it does
/// not set take the node's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    values: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Sets `name` to `value` (text, as Kafka clients send it), checked.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), TopicConfigError> {
        let key = known(name)?;
        let value = key.parse(value)?;
        self.set_key(key, value)
    }

    /// Sets `key` to `value`, checked.
    pub fn set_key(&mut self, key: TopicKey, value: i64) -> Result<(), TopicConfigError> {
        key.check(value)?;
        self.values.insert(key.name().to_string(), key.text(value));
        Ok(())
    }

    /// Removes `name`: the topic takes the node's default again.
    pub fn reset(&mut self, name: &str) -> Result<(), TopicConfigError> {
        let key = known(name)?;
        self.values.remove(key.name());
        Ok(())
    }

    /// The topic's own value of `key`, if it sets one.
    pub fn get(&self, key: TopicKey) -> Option<i64> {
        self.values.get(key.name()).and_then(|v| key.parse(v).ok())
    }

    /// The keys the topic sets, with their values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the topic sets no key.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Builds a config from `(name, value)` pairs, checking each.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig, TopicConfigError> {
        let mut config = TopicConfig::default();
        for (name, value) in pairs {
            config.set(name, value)?;
        }
        Ok(config)
    }

    /// Checks every key and value again (a config read from the controller log is checked
    /// before it is applied, as one from a client).
    pub fn validate(&self) -> Result<(), TopicConfigError> {
        for (name, value) in &self.values {
            known(name)?.parse(value)?;
        }
        Ok(())
    }

    /// Checks the values that the node's own settings bound.
    pub fn check_against(&self, defaults: &TopicSettings) -> Result<(), TopicConfigError> {
        if let Some(value) = self.get(TopicKey::MaxMessageBytes)
            && u64::try_from(value).map_or(true, |v| v > defaults.max_message_bytes)
        {
            return Err(TopicConfigError::AboveNodeLimit {
                key: TopicKey::MaxMessageBytes.name(),
                value,
                server_key: TopicKey::MaxMessageBytes.server_key(),
                limit: defaults.max_message_bytes,
            });
        }
        Ok(())
    }

    /// The settings in effect: this topic's values over `defaults` (the node's).
    pub fn settings(&self, defaults: &TopicSettings) -> TopicSettings {
        let unlimited = |value: i64| (value != -1).then_some(value);
        let positive = |value: i64| u64::try_from(value).unwrap_or(1).max(1);
        TopicSettings {
            retention_ms: self
                .get(TopicKey::RetentionMs)
                .map_or(defaults.retention_ms, unlimited),
            retention_bytes: self
                .get(TopicKey::RetentionBytes)
                .map_or(defaults.retention_bytes, |v| unlimited(v).map(positive)),
            segment_bytes: self
                .get(TopicKey::SegmentBytes)
                .map_or(defaults.segment_bytes, positive),
            segment_ms: self.get(TopicKey::SegmentMs).unwrap_or(defaults.segment_ms),
            max_message_bytes: self
                .get(TopicKey::MaxMessageBytes)
                .map_or(defaults.max_message_bytes, |v| {
                    positive(v).min(defaults.max_message_bytes)
                }),
            timestamp_before_max_ms: self
                .get(TopicKey::TimestampBeforeMaxMs)
                .unwrap_or(defaults.timestamp_before_max_ms),
            timestamp_after_max_ms: self
                .get(TopicKey::TimestampAfterMaxMs)
                .unwrap_or(defaults.timestamp_after_max_ms),
            log_append_time: self
                .get(TopicKey::TimestampType)
                .map_or(defaults.log_append_time, |v| v == 1),
        }
    }
}

fn known(name: &str) -> Result<TopicKey, TopicConfigError> {
    TopicKey::from_name(name).ok_or_else(|| TopicConfigError::Unknown { name: shown(name) })
}

/// The settings a partition runs with (a topic's values over its node's defaults), typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// Retention by age, in ms; `None`: unlimited.
    pub retention_ms: Option<i64>,
    /// Retention by size, in bytes per partition; `None`: unlimited.
    pub retention_bytes: Option<u64>,
    /// Segment size, in bytes.
    pub segment_bytes: u64,
    /// Segment age, in ms.
    pub segment_ms: i64,
    /// Largest record batch a producer may send, in bytes.
    pub max_message_bytes: u64,
    /// A record's timestamp may be at most this many ms before the time it is produced.
    pub timestamp_before_max_ms: i64,
    /// A record's timestamp may be at most this many ms after the time it is produced.
    pub timestamp_after_max_ms: i64,
    /// Whether the leader stamps each batch with its clock on append
    /// (`message.timestamp.type=LogAppendTime`); else the producer's timestamps stand.
    pub log_append_time: bool,
}

impl TopicSettings {
    /// The value of `key` as Kafka shows it (-1 for unlimited).
    pub fn value(&self, key: TopicKey) -> i64 {
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match key {
            TopicKey::RetentionMs => self.retention_ms.unwrap_or(-1),
            TopicKey::RetentionBytes => self.retention_bytes.map_or(-1, signed),
            TopicKey::SegmentBytes => signed(self.segment_bytes),
            TopicKey::SegmentMs => self.segment_ms,
            TopicKey::MaxMessageBytes => signed(self.max_message_bytes),
            TopicKey::TimestampBeforeMaxMs => self.timestamp_before_max_ms,
            TopicKey::TimestampAfterMaxMs => self.timestamp_after_max_ms,
            TopicKey::TimestampType => i64::from(self.log_append_time),
        }
    }

    /// The value of `key` as text, as Kafka shows it.
    pub fn text(&self, key: TopicKey) -> String {
        key.text(self.value(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicSettings {
        TopicSettings {
            retention_ms: Some(1000),
            retention_bytes: None,
            segment_bytes: 256 << 20,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_message_bytes: 8 << 20,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            log_append_time: false,
        }
    }

    #[test]
    fn the_timestamp_type_is_kept_and_shown_by_kafkas_names() {
        let mut config = TopicConfig::default();
        config
            .set("message.timestamp.type", "LogAppendTime")
            .unwrap();
        assert_eq!(
            config.iter().collect::<Vec<_>>(),
            [("message.timestamp.type", "LogAppendTime")]
        );
        let settings = config.settings(&defaults());
        assert!(settings.log_append_time);
        assert_eq!(settings.text(TopicKey::TimestampType), "LogAppendTime");
        config.validate().unwrap();
        for bad in ["logappendtime", "1", "LogAppendTime2"] {
            let refused = config.set("message.timestamp.type", bad).unwrap_err();
            assert!(
                refused.to_string().contains("CreateTime or LogAppendTime"),
                "{refused}"
            );
        }
        config.reset("message.timestamp.type").unwrap();
        assert!(!config.settings(&defaults()).log_append_time);
    }

    #[test]
    fn values_are_checked_against_each_keys_range() {
        let cases: &[(&str, &str, bool)] = &[
            ("retention.ms", "-1", true),
            ("retention.ms", "1", true),
            ("retention.ms", "0", false),
            ("retention.ms", "-2", false),
            ("retention.ms", "1e3", false),
            ("retention.bytes", "-1", true),
            ("retention.bytes", "0", false),
            ("retention.bytes", "9223372036854775807", true),
            ("retention.bytes", "9223372036854775808", false),
            ("segment.bytes", "65536", true),
            ("segment.bytes", "65535", false),
            ("segment.bytes", "-1", false),
            ("segment.bytes", "2147483648", false),
            ("segment.ms", "0", false),
            ("segment.ms", "-1", false),
            ("max.message.bytes", "0", false),
            ("max.message.bytes", "1", true),
            ("message.timestamp.after.max.ms", "0", true),
            ("message.timestamp.after.max.ms", "-1", false),
            (
                "message.timestamp.before.max.ms",
                "9223372036854775807",
                true,
            ),
        ];
        for (name, value, ok) in cases {
            let result = TopicConfig::default().set(name, value);
            assert_eq!(result.is_ok(), *ok, "{name} = {value}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains(name), "{e}");
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused_and_long_input_is_not_echoed_whole() {
        let mut config = TopicConfig::default();
        let long = "x".repeat(10_000);
        let e = config.set(&long, "1").unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
        let e = config.set("retention.ms", &long).unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
        let e = config.set("cleanup.policy", "compact").unwrap_err();
        assert!(e.to_string().contains("retention.ms"), "{e}");
        assert!(config.reset("nope").is_err());
        assert!(config.is_empty());
    }

    #[test]
    fn unlimited_overrides_a_limited_default_and_absent_keys_take_the_default() {
        let mut config = TopicConfig::default();
        assert_eq!(config.settings(&defaults()), defaults());
        config.set("retention.ms", "-1").unwrap();
        config.set("retention.bytes", "5000").unwrap();
        let settings = config.settings(&defaults());
        assert_eq!(settings.retention_ms, None);
        assert_eq!(settings.retention_bytes, Some(5000));
        assert_eq!(settings.value(TopicKey::RetentionMs), -1);
        config.reset("retention.ms").unwrap();
        assert_eq!(config.settings(&defaults()).retention_ms, Some(1000));
    }

    #[test]
    fn max_message_bytes_is_bounded_by_the_nodes_entry_limit() {
        let mut config = TopicConfig::default();
        config.set("max.message.bytes", "1048576").unwrap();
        config.check_against(&defaults()).unwrap();
        config.set("max.message.bytes", "16777216").unwrap();
        let e = config.check_against(&defaults()).unwrap_err();
        assert!(e.to_string().contains("log.entry_bytes_max"), "{e}");
    }

    #[test]
    fn a_stored_config_is_checked_again_before_it_is_applied() {
        let mut values = BTreeMap::new();
        values.insert("retention.ms".to_string(), "-7".to_string());
        assert!(TopicConfig { values }.validate().is_err());
    }
}
