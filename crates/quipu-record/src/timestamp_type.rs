//! What a batch's timestamps mean (attribute bit 3).

/// Whether record timestamps were set by the producer or by the broker on append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// The producer's clock when the record was created (bit 3 clear).
    CreateTime,
    /// The broker's clock when the batch was appended to the log (bit 3 set).
    LogAppendTime,
}

impl TimestampType {
    /// Attribute bit 3, set for log-append time.
    pub(crate) const ATTRIBUTE_BIT: i16 = 1 << 3;

    /// Reads the timestamp type from batch attributes.
    pub fn from_attributes(attributes: i16) -> Self {
        if attributes & Self::ATTRIBUTE_BIT == 0 {
            Self::CreateTime
        } else {
            Self::LogAppendTime
        }
    }
}
