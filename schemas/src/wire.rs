//! The Confluent wire format: one magic byte `0`, the schema id as a 4-byte
//! big-endian integer, then the Avro binary body.
//!
//! Every record the bridge writes starts with these five bytes, which is what
//! lets Java/Python/Go Confluent deserializers read our topics unchanged.

/// The first byte of every Confluent-framed record.
pub const MAGIC_BYTE: u8 = 0;
/// Length of the header in front of the Avro body.
pub const HEADER_LEN: usize = 5;

/// A schema id as the registry hands it out.
pub type SchemaId = u32;

/// Why a byte slice is not a Confluent-framed record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Fewer than five bytes: not even a header.
    #[error("record is {0} bytes long, shorter than the 5-byte Confluent header")]
    TooShort(usize),
    /// The first byte is not 0: the record was not written with a schema registry serializer.
    #[error(
        "record starts with byte {0:#04x}, not the Confluent magic byte 0x00; was it written by a schema-registry serializer?"
    )]
    BadMagic(u8),
}

/// Prepends the 5-byte header for `id` to `avro_body`.
pub fn frame(id: SchemaId, avro_body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + avro_body.len());
    out.extend_from_slice(&header(id));
    out.extend_from_slice(avro_body);
    out
}

/// The 5-byte header for `id`: the magic byte, then the id big-endian.
pub fn header(id: SchemaId) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = id.to_be_bytes();
    [MAGIC_BYTE, a, b, c, d]
}

/// Splits a framed record into its schema id and its Avro body.
pub fn unframe(record: &[u8]) -> Result<(SchemaId, &[u8]), WireError> {
    if record.len() < HEADER_LEN {
        return Err(WireError::TooShort(record.len()));
    }
    if record[0] != MAGIC_BYTE {
        return Err(WireError::BadMagic(record[0]));
    }
    let id = u32::from_be_bytes([record[1], record[2], record[3], record[4]]);
    Ok((id, &record[HEADER_LEN..]))
}

/// Avro binary encoding of `value` (no header), validated against `schema`.
pub fn encode_avro(
    schema: &apache_avro::Schema,
    value: apache_avro::types::Value,
) -> Result<Vec<u8>, apache_avro::Error> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema).build()?.write_value_to_vec(value)
}

/// Decodes an Avro body (no header) written with `schema`.
pub fn decode_avro(
    schema: &apache_avro::Schema,
    mut body: &[u8],
) -> Result<apache_avro::types::Value, apache_avro::Error> {
    apache_avro::reader::datum::GenericDatumReader::builder(schema).build()?.read_value(&mut body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_id_big_endian_after_magic_byte() {
        assert_eq!(frame(0x0102_0304, b"ab"), vec![0, 1, 2, 3, 4, b'a', b'b']);
        assert_eq!(frame(7, b""), vec![0, 0, 0, 0, 7]);
    }

    #[test]
    fn unframe_round_trips_and_rejects_bad_input() {
        let framed = frame(4242, &[9, 8, 7]);
        assert_eq!(unframe(&framed), Ok((4242, &[9u8, 8, 7][..])));
        assert_eq!(unframe(&[0, 0, 1]), Err(WireError::TooShort(3)));
        assert_eq!(unframe(&[1, 0, 0, 0, 1]), Err(WireError::BadMagic(1)));
    }
}
