//! What the coordinator reads of Kafka's consumer protocol: the topics of a classic member's
//! subscription and the partitions of its assignment (both opaque to the group protocol, whose
//! assignors run in the clients). Read with the records' bounded reader: nothing is allocated
//! past what the bytes hold, and bytes that are not one give nothing.

use crate::NAME_BYTES_MAX;
use crate::consumer::Assignment;
use crate::record::Reader;

/// The topics a consumer's subscription (its JoinGroup metadata for any of the consumer
/// protocol's assignors: version, then the topic names) names, or none if the bytes are not
/// one.
pub fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    let mut r = Reader(metadata);
    let read = (|| {
        r.u16("version")?;
        let count = r.i32("topics")?;
        (0..count.max(0))
            .map(|_| r.string("topic", NAME_BYTES_MAX))
            .collect::<Result<Vec<String>, _>>()
    })();
    read.unwrap_or_default()
}

/// The partitions a classic consumer's assignment (version, then per topic its name and
/// partitions) names, or none if the bytes are not one.
pub fn assigned_partitions(assignment: &[u8]) -> Assignment {
    let mut r = Reader(assignment);
    let read = (|| {
        r.u16("version")?;
        let mut out = Assignment::new();
        for _ in 0..r.i32("topics")?.max(0) {
            let topic = r.string("topic", NAME_BYTES_MAX)?;
            let partitions = out.entry(topic).or_default();
            for _ in 0..r.i32("partitions")?.max(0) {
                partitions.insert(r.i32("partition")?);
            }
        }
        Ok::<_, crate::RecordError>(out)
    })();
    read.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_name_their_partitions() {
        // Version 0, one topic "t" with partitions 2 and 0, then user data.
        let bytes = [
            0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff,
            0xff,
        ];
        assert_eq!(assigned_partitions(&bytes)["t"], [0, 2].into());
        assert!(assigned_partitions(&bytes[..12]).is_empty());
    }

    #[test]
    fn subscriptions_name_their_topics() {
        // Version 1, two topics, then user data and owned partitions (ignored).
        let mut subscription = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        subscription.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(subscribed_topics(&subscription), ["a", "bc"]);
        assert!(subscribed_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_empty());
        assert!(subscribed_topics(b"").is_empty());
    }
}
