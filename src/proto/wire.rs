//! The server's side of the wire: the scaler's two request messages, decoded by hand, and
//! its GetMetrics answer, encoded by hand.
//!
//! KEDA sends the same `ScaledObjectRef` on every poll; the trigger cache needs only to read
//! its entries to find the parsed trigger. prost's generated types would decode a request into
//! a `String` per field and a `HashMap<String, String>` (two more per entry); these keep every
//! string of the request in one `String`, allocated once at the message's size, and where each
//! string is, with room for a usual trigger's entries inline. Decoding follows protobuf's
//! rules as prost's generated code applies them: invalid UTF-8 is a decode error, a missing key
//! or value is empty, unknown fields are skipped, a string field given twice keeps the last, a
//! message field given twice is merged, of a map key given twice the last entry counts
//! ([`ScaledObjectRef::entries`] yields every entry; its consumers keep the last), and a map
//! entry is read as length-delimited whatever wire type its key says. The tests
//! hold it to the generated types on arbitrary bytes. The GetMetrics answer holds its one
//! `MetricValue` without the generated type's `Vec`, and is encoded to the same bytes.
//!
//! The service generated against these types is [`external_scaler_server`]; clients use
//! [`crate::proto`]'s generated types.

// Written by hand, unlike the rest of `proto`: linted as the rest of the crate.
#![warn(clippy::all)]

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType},
};
use smallvec::SmallVec;
use tonic::{
    Status,
    codec::{BufferSettings, DecodeBuf, EncodeBuf},
};

use super::{GetMetricSpecResponse, IsActiveResponse};

mod generated {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/wire/externalscaler.rs"));
}

pub use generated::external_scaler_server;

/// The service's codec: answers encoded by [`Encode`], requests decoded by [`Decode`], each
/// with a buffer sized for the scaler's messages.
///
/// tonic gives every RPC an 8 KiB buffer to decode its request into and another to encode
/// its answer into. The scaler's requests are a few hundred bytes and its answers fewer than
/// a hundred: with [`BUFFER_BYTES`] buffers, which malloc serves from its per-thread cache, a
/// warm GetMetrics costs about 1,000 fewer instructions (BENCHMARKS.md, Performance III). A
/// bigger message still decodes: the buffer grows in steps of that size.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(std::marker::PhantomData<(T, U)>);

/// The buffer each RPC decodes its request into and encodes its answer into.
pub const BUFFER_BYTES: usize = 512;

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Encode + Send + 'static,
    U: Decode + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = Encoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        Encoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(std::marker::PhantomData)
    }
}

fn buffer_settings() -> BufferSettings {
    // tonic's own yield threshold (32 KiB): only streams of many messages reach it.
    BufferSettings::new(BUFFER_BYTES, 32 * 1024)
}

/// A request message decoded from its bytes by hand.
pub trait Decode: Sized {
    /// The message these bytes (one whole message) encode.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Decodes one request per gRPC message with [`Decode`].
#[derive(Debug)]
pub struct Decoder<U>(std::marker::PhantomData<U>);

impl<U: Decode> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let decoded = if buf.chunk().len() == len {
            let decoded = U::decode(buf.chunk());
            buf.advance(len);
            decoded
        } else {
            // A message over several chunks (tonic gives one; kept correct anyway).
            U::decode(&buf.copy_to_bytes(len))
        };
        // As tonic's prost codec answers a message it cannot decode.
        decoded
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// An answer message, encoded by prost or by hand.
pub trait Encode {
    /// Writes the message's fields (no length before them) to `buf`.
    fn encode(&self, buf: &mut impl BufMut);
}

impl Encode for IsActiveResponse {
    fn encode(&self, buf: &mut impl BufMut) {
        self.encode_raw(buf);
    }
}

impl Encode for GetMetricSpecResponse {
    fn encode(&self, buf: &mut impl BufMut) {
        self.encode_raw(buf);
    }
}

/// Encodes one answer per gRPC message with [`Encode`].
#[derive(Debug)]
pub struct Encoder<T>(std::marker::PhantomData<T>);

impl<T: Encode> tonic::codec::Encoder for Encoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // The buffer grows as it is written to, as for prost's encoder.
        item.encode(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// `externalscaler.GetMetricsResponse` as the scaler answers: exactly one `MetricValue`,
/// without the `Vec` the generated type holds it in. Encoded as prost encodes the generated
/// type, byte for byte (tests).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct GetMetricsResponse {
    pub metric_name: String,
    pub metric_value: i64,
    pub metric_value_float: f64,
}

impl GetMetricsResponse {
    /// The `MetricValue`'s fields, as proto3 encodes them: none that holds its default.
    fn value_len(&self) -> usize {
        let mut len = 0;
        if !self.metric_name.is_empty() {
            len += encoding::string::encoded_len(1, &self.metric_name);
        }
        if self.metric_value != 0 {
            len += encoding::int64::encoded_len(2, &self.metric_value);
        }
        if self.metric_value_float != 0.0 {
            len += encoding::double::encoded_len(3, &self.metric_value_float);
        }
        len
    }
}

impl Encode for GetMetricsResponse {
    fn encode(&self, buf: &mut impl BufMut) {
        encoding::encode_key(1, WireType::LengthDelimited, buf);
        encoding::encode_varint(self.value_len() as u64, buf);
        if !self.metric_name.is_empty() {
            encoding::string::encode(1, &self.metric_name, buf);
        }
        if self.metric_value != 0 {
            encoding::int64::encode(2, &self.metric_value, buf);
        }
        if self.metric_value_float != 0.0 {
            encoding::double::encode(3, &self.metric_value_float, buf);
        }
    }
}

/// Where a string is in the request's text: `start..end`. A request is at most tonic's
/// decoding limit (4 MiB unless set higher); a bigger one than `u32` counts is refused.
type Range = (u32, u32);

/// One map entry: where its key and its value are.
#[derive(Clone, Copy, PartialEq, Default, Debug)]
struct Span {
    key: Range,
    value: Range,
}

/// Entries kept without an allocation of their own: more than most triggers have.
const ENTRIES_INLINE: usize = 8;

/// `externalscaler.ScaledObjectRef`.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ScaledObjectRef {
    /// The request's strings: the whole message when it is UTF-8 (as a request whose strings
    /// and lengths are ASCII is), each string where it is in it; otherwise each string copied
    /// after the one before.
    text: String,
    /// Whether `text` is the whole message.
    in_place: bool,
    name: Range,
    namespace: Range,
    entries: SmallVec<[Span; ENTRIES_INLINE]>,
}

impl ScaledObjectRef {
    pub fn name(&self) -> &str {
        self.str(self.name)
    }

    pub fn namespace(&self) -> &str {
        self.str(self.namespace)
    }

    /// `scalerMetadata`'s entries in the order they came; a key may repeat (the last one
    /// counts).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.entries
            .iter()
            .map(|span| (self.str(span.key), self.str(span.value)))
    }

    fn str(&self, (start, end): Range) -> &str {
        &self.text[start as usize..end as usize]
    }

    /// Ready to take the strings of `message`: one check of the whole message for UTF-8 and
    /// one copy, instead of one of each per string.
    fn for_message(message: &[u8]) -> Result<Self, DecodeError> {
        if u32::try_from(message.len()).is_err() {
            return Err(decode_error("message too large"));
        }
        let (text, in_place) = match std::str::from_utf8(message) {
            Ok(text) => (text.to_owned(), true),
            // The strings are never more than the message.
            Err(_) => (String::with_capacity(message.len()), false),
        };
        Ok(ScaledObjectRef {
            text,
            in_place,
            ..ScaledObjectRef::default()
        })
    }

    /// Merges the fields encoded in `bytes`, a part of `message`, into this message.
    fn merge(&mut self, message: &[u8], mut bytes: &[u8]) -> Result<(), DecodeError> {
        while !bytes.is_empty() {
            let (tag, wire_type) = key(&mut bytes)?;
            match tag {
                1 => self.name = self.push_str(message, wire_type, &mut bytes)?,
                2 => self.namespace = self.push_str(message, wire_type, &mut bytes)?,
                3 => self.merge_entry(message, &mut bytes)?,
                _ => skip(wire_type, tag, &mut bytes)?,
            }
        }
        Ok(())
    }

    /// One map entry: a nested message with key = 1 and value = 2, in any order, the last of
    /// each counting. Whatever wire type the field's key says, the entry is read as
    /// length-delimited, as prost reads a map entry (a string or message field of another
    /// wire type is an error, for both).
    fn merge_entry(&mut self, message: &[u8], bytes: &mut &[u8]) -> Result<(), DecodeError> {
        let mut entry = length_delimited(bytes)?;
        let mut span = Span::default();
        while !entry.is_empty() {
            let (tag, wire_type) = key(&mut entry)?;
            match tag {
                1 => span.key = self.push_str(message, wire_type, &mut entry)?,
                2 => span.value = self.push_str(message, wire_type, &mut entry)?,
                _ => skip(wire_type, tag, &mut entry)?,
            }
        }
        self.entries.push(span);
        Ok(())
    }

    /// A string field of `message`: where it is in the text.
    fn push_str(
        &mut self,
        message: &[u8],
        wire_type: WireType,
        bytes: &mut &[u8],
    ) -> Result<Range, DecodeError> {
        let field = delimited(wire_type, bytes)?;
        // Within `u32`, as the message is (checked in `for_message`).
        if self.in_place {
            // Part of a UTF-8 text is UTF-8 exactly when it starts and ends on a character
            // boundary.
            let start = field.as_ptr() as usize - message.as_ptr() as usize;
            let end = start + field.len();
            if !(self.text.is_char_boundary(start) && self.text.is_char_boundary(end)) {
                return Err(not_utf8());
            }
            return Ok((start as u32, end as u32));
        }
        let field = std::str::from_utf8(field).map_err(|_| not_utf8())?;
        let start = self.text.len() as u32;
        self.text.push_str(field);
        Ok((start, self.text.len() as u32))
    }
}

impl Decode for ScaledObjectRef {
    fn decode(message: &[u8]) -> Result<Self, DecodeError> {
        let mut object = ScaledObjectRef::for_message(message)?;
        object.merge(message, message)?;
        Ok(object)
    }
}

/// `externalscaler.GetMetricsRequest`.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct GetMetricsRequest {
    /// `scaledObjectRef`, empty when the request has none; its text holds `metricName` too.
    object: ScaledObjectRef,
    has_object: bool,
    metric_name: Range,
}

impl GetMetricsRequest {
    pub fn scaled_object_ref(&self) -> Option<&ScaledObjectRef> {
        self.has_object.then_some(&self.object)
    }

    pub fn metric_name(&self) -> &str {
        self.object.str(self.metric_name)
    }
}

impl Decode for GetMetricsRequest {
    fn decode(message: &[u8]) -> Result<Self, DecodeError> {
        let mut request = GetMetricsRequest {
            object: ScaledObjectRef::for_message(message)?,
            ..GetMetricsRequest::default()
        };
        let (object, mut bytes) = (&mut request.object, message);
        while !bytes.is_empty() {
            let (tag, wire_type) = key(&mut bytes)?;
            match tag {
                1 => {
                    object.merge(message, delimited(wire_type, &mut bytes)?)?;
                    request.has_object = true;
                }
                2 => request.metric_name = object.push_str(message, wire_type, &mut bytes)?,
                _ => skip(wire_type, tag, &mut bytes)?,
            }
        }
        Ok(request)
    }
}

/// A field's key: its tag and wire type. A key of one byte (tags 1 to 15, all of these
/// messages' fields) is read here; any other, and any error, as prost reads it.
#[inline]
fn key(bytes: &mut &[u8]) -> Result<(u32, WireType), DecodeError> {
    if let Some((&byte, rest)) = bytes.split_first()
        && (8..0x80).contains(&byte)
        && let Ok(wire_type) = WireType::try_from(u64::from(byte & 0x07))
    {
        *bytes = rest;
        return Ok((u32::from(byte >> 3), wire_type));
    }
    encoding::decode_key(bytes)
}

/// A varint: one byte (a length below 128, as every string of a usual request has) read
/// here, any other as prost reads it.
#[inline]
fn varint(bytes: &mut &[u8]) -> Result<u64, DecodeError> {
    if let Some((&byte, rest)) = bytes.split_first()
        && byte < 0x80
    {
        *bytes = rest;
        return Ok(u64::from(byte));
    }
    encoding::decode_varint(bytes)
}

/// A length-delimited field's bytes.
#[inline]
fn delimited<'a>(wire_type: WireType, bytes: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    length_delimited(bytes)
}

/// A length (a varint), then that many bytes: those bytes.
#[inline]
fn length_delimited<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = varint(bytes)?;
    if len > bytes.len() as u64 {
        return Err(decode_error("buffer underflow"));
    }
    let (field, rest) = bytes.split_at(len as usize);
    *bytes = rest;
    Ok(field)
}

/// An unknown field, skipped as prost skips it (groups included, within its depth limit).
fn skip(wire_type: WireType, tag: u32, bytes: &mut &[u8]) -> Result<(), DecodeError> {
    encoding::skip_field(wire_type, tag, bytes, DecodeContext::default())
}

fn not_utf8() -> DecodeError {
    decode_error("invalid string value: data is not UTF-8 encoded")
}

/// prost offers a hand-written decoder no other way to make its error than this constructor,
/// deprecated for removal in its next major version (which changes the `Message` trait too).
#[allow(deprecated)]
fn decode_error(description: &'static str) -> DecodeError {
    DecodeError::new(description)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::proto;

    fn generated(pairs: &[(&str, &str)]) -> proto::ScaledObjectRef {
        proto::ScaledObjectRef {
            name: "worker".into(),
            namespace: "team-a".into(),
            scaler_metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// What a generated decoder makes of the same bytes: the last entry of a key counts.
    fn as_generated(object: &ScaledObjectRef) -> proto::ScaledObjectRef {
        proto::ScaledObjectRef {
            name: object.name().into(),
            namespace: object.namespace().into(),
            scaler_metadata: object
                .entries()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        }
    }

    fn request_as_generated(request: &GetMetricsRequest) -> proto::GetMetricsRequest {
        proto::GetMetricsRequest {
            scaled_object_ref: request.scaled_object_ref().map(as_generated),
            metric_name: request.metric_name().into(),
        }
    }

    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        assert!(bytes.len() < 128, "one-byte lengths only");
        let mut out = vec![tag << 3 | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_what_the_generated_type_encodes() {
        let pairs = [
            ("source", "redis-main"),
            ("keys", "a,b"),
            ("", "empty key"),
            ("empty", ""),
        ];
        let sent = generated(&pairs);
        let wire = ScaledObjectRef::decode(&sent.encode_to_vec()).unwrap();
        assert_eq!((wire.name(), wire.namespace()), ("worker", "team-a"));
        assert_eq!(as_generated(&wire), sent);
        assert_eq!(wire.entries().count(), 4);
    }

    #[test]
    fn more_entries_than_are_kept_inline_all_come_through() {
        let pairs: Vec<(String, String)> = (0..3 * ENTRIES_INLINE)
            .map(|i| (format!("key-{i}"), format!("value-{i}")))
            .collect();
        let sent = proto::ScaledObjectRef {
            scaler_metadata: pairs.into_iter().collect(),
            ..generated(&[])
        };
        let wire = ScaledObjectRef::decode(&sent.encode_to_vec()).unwrap();
        assert_eq!(wire.entries().count(), 3 * ENTRIES_INLINE);
        assert_eq!(as_generated(&wire), sent);
    }

    #[test]
    fn a_repeated_key_keeps_every_entry_in_order_and_the_generated_map_keeps_the_last() {
        let bytes = [
            field(3, &[field(1, b"target"), field(2, b"1")].concat()),
            field(3, &[field(1, b"target"), field(2, b"2")].concat()),
        ]
        .concat();
        let generated = proto::ScaledObjectRef::decode(&bytes[..]).unwrap();
        assert_eq!(generated.scaler_metadata["target"], "2");
        let decoded = ScaledObjectRef::decode(&bytes).unwrap();
        let entries: Vec<_> = decoded.entries().collect();
        assert_eq!(entries, [("target", "1"), ("target", "2")]);
        assert_eq!(as_generated(&decoded), generated);
    }

    #[test]
    fn a_field_given_twice_is_what_the_generated_type_makes_of_it() {
        // The name twice (the last counts) and the object twice (merged), with the metric
        // name between them.
        let first = [field(1, b"old"), field(3, &field(1, b"a"))].concat();
        let second = [field(1, b"new"), field(3, &field(1, b"b"))].concat();
        let bytes = [field(1, &first), field(2, b"m"), field(1, &second)].concat();
        let generated = proto::GetMetricsRequest::decode(&bytes[..]).unwrap();
        let decoded = GetMetricsRequest::decode(&bytes).unwrap();
        assert_eq!(request_as_generated(&decoded), generated);
        assert_eq!(decoded.scaled_object_ref().unwrap().name(), "new");
        assert_eq!(decoded.scaled_object_ref().unwrap().entries().count(), 2);
    }

    #[test]
    fn decoding_errors_are_the_generated_types_errors() {
        // An entry whose value is not UTF-8: field 3 { field 2: [0xff] }.
        let bad_utf8 = [0x1a, 0x03, 0x12, 0x01, 0xff];
        assert!(proto::ScaledObjectRef::decode(&bad_utf8[..]).is_err());
        assert!(ScaledObjectRef::decode(&bad_utf8).is_err());
        // An entry that claims more bytes than there are.
        let short = [0x1a, 0x05, 0x0a, 0x01, b'k'];
        assert!(proto::ScaledObjectRef::decode(&short[..]).is_err());
        assert!(ScaledObjectRef::decode(&short).is_err());
        // A key whose length runs past its entry.
        let overrun = [0x1a, 0x02, 0x0a, 0x05, b'k', b'e', b'y', b'!', b'!'];
        assert!(proto::ScaledObjectRef::decode(&overrun[..]).is_err());
        assert!(ScaledObjectRef::decode(&overrun).is_err());
        // A name with the wire type of a number is refused by both.
        let name_as_varint = [0x08, 0x01];
        assert!(proto::ScaledObjectRef::decode(&name_as_varint[..]).is_err());
        assert!(ScaledObjectRef::decode(&name_as_varint).is_err());
        // A map entry is read as length-delimited whatever its key's wire type says, by prost
        // and so by this decoder: field 3 as a varint "0" is an empty entry.
        let entry_as_varint = [0x18, 0x00];
        let generated = proto::ScaledObjectRef::decode(&entry_as_varint[..]).unwrap();
        let wire = ScaledObjectRef::decode(&entry_as_varint).unwrap();
        assert_eq!(as_generated(&wire), generated);
        assert_eq!(generated.scaler_metadata[""], "");
        // Unknown fields, inside an entry and outside, are skipped by both.
        let unknown = [0x1a, 0x05, 0x0a, 0x01, b'k', 0x18, 0x07, 0x20, 0x01];
        let generated = proto::ScaledObjectRef::decode(&unknown[..]).unwrap();
        let wire = ScaledObjectRef::decode(&unknown).unwrap();
        assert_eq!(as_generated(&wire), generated);
        assert_eq!(generated.scaler_metadata[&"k".to_string()], "");
    }

    #[test]
    fn strings_in_a_utf8_message_and_in_one_that_is_not_come_through_alike() {
        // Non-ASCII strings: the whole message is still UTF-8, and each string is read where
        // it is.
        let non_ascii = generated(&[("ключ", "値"), ("k", "é")]);
        let bytes = non_ascii.encode_to_vec();
        assert!(std::str::from_utf8(&bytes).is_ok());
        let wire = ScaledObjectRef::decode(&bytes).unwrap();
        assert!(wire.in_place);
        assert_eq!(as_generated(&wire), non_ascii);
        // A string of 128 bytes or more has a length of two bytes, the first not UTF-8: each
        // string is copied instead.
        let long = "v".repeat(200);
        let long = generated(&[("ключ", &long), ("k", "é")]);
        let bytes = long.encode_to_vec();
        assert!(std::str::from_utf8(&bytes).is_err());
        let wire = ScaledObjectRef::decode(&bytes).unwrap();
        assert!(!wire.in_place);
        assert_eq!(as_generated(&wire), long);
    }

    #[test]
    fn a_string_that_splits_a_character_of_a_utf8_message_is_refused() {
        // name = [0xc3], then an unknown fixed64 field whose key begins 0xa9: the message
        // holds `é` (0xc3 0xa9) across the two fields, so it is UTF-8 as a whole, but the name
        // alone is not.
        let mut bytes = vec![0x0a, 0x01, 0xc3, 0xa9, 0x01];
        bytes.extend_from_slice(b"12345678");
        assert!(std::str::from_utf8(&bytes).is_ok());
        assert!(proto::ScaledObjectRef::decode(&bytes[..]).is_err());
        assert!(ScaledObjectRef::decode(&bytes).is_err());
        // The unknown field alone (a string that ends there is fine).
        let fine = [&[0x0a, 0x01, b'n', 0xa9, 0x01][..], b"12345678"].concat();
        let wire = ScaledObjectRef::decode(&fine).unwrap();
        assert_eq!(
            as_generated(&wire),
            proto::ScaledObjectRef::decode(&fine[..]).unwrap()
        );
    }

    #[test]
    fn a_get_metrics_request_carries_it_or_says_it_has_none() {
        let sent = proto::GetMetricsRequest {
            scaled_object_ref: Some(generated(&[("metric", "redis-list")])),
            metric_name: "redis-list-x-0a1b2c3d".into(),
        };
        let wire = GetMetricsRequest::decode(&sent.encode_to_vec()).unwrap();
        assert_eq!(wire.metric_name(), sent.metric_name);
        let object = wire.scaled_object_ref().unwrap();
        assert_eq!(
            object.entries().collect::<Vec<_>>(),
            [("metric", "redis-list")]
        );
        assert_eq!(request_as_generated(&wire), sent);

        let without = proto::GetMetricsRequest {
            scaled_object_ref: None,
            metric_name: "m".into(),
        };
        let wire = GetMetricsRequest::decode(&without.encode_to_vec()).unwrap();
        assert!(wire.scaled_object_ref().is_none());
        assert_eq!(wire.metric_name(), "m");
        // An empty object is still an object.
        let empty = [0x0a, 0x00];
        assert!(
            GetMetricsRequest::decode(&empty)
                .unwrap()
                .scaled_object_ref()
                .is_some()
        );
    }

    fn encoded(answer: &impl Encode) -> Vec<u8> {
        let mut buf = Vec::new();
        answer.encode(&mut buf);
        buf
    }

    #[test]
    fn the_get_metrics_answer_is_the_generated_types_bytes() {
        let values = [
            ("redis-list-jobs-0a1b2c3d", 4, 3.5),
            ("m-00000000", 0, 0.0),
            ("", 1, 1.0),
            ("negative", -7, -7.0),
            ("zero-float", 0, -0.0),
            ("huge", i64::MAX, f64::MAX),
        ];
        for (name, value, float) in values {
            let answer = GetMetricsResponse {
                metric_name: name.into(),
                metric_value: value,
                metric_value_float: float,
            };
            let generated = proto::GetMetricsResponse {
                metric_values: vec![proto::MetricValue {
                    metric_name: name.into(),
                    metric_value: value,
                    metric_value_float: float,
                }],
            };
            assert_eq!(encoded(&answer), generated.encode_to_vec(), "{name}");
        }
    }

    #[test]
    fn the_other_answers_are_encoded_by_prost() {
        let active = IsActiveResponse { result: true };
        assert_eq!(encoded(&active), active.encode_to_vec());
        let spec = GetMetricSpecResponse {
            metric_specs: vec![proto::MetricSpec {
                metric_name: "m-0a1b2c3d".into(),
                target_size: 5,
                target_size_float: 5.0,
            }],
        };
        assert_eq!(encoded(&spec), spec.encode_to_vec());
    }

    /// A valid request, then bytes changed, cut short or added: every input either decodes
    /// to what the generated type decodes or fails where it fails.
    fn mangled_request() -> impl Strategy<Value = Vec<u8>> {
        let pairs = proptest::collection::vec(("[a-z]{0,6}", "[a-z0-9,]{0,8}"), 0..12);
        (pairs, "[a-z-]{0,12}", any::<bool>()).prop_flat_map(|(pairs, metric, has_object)| {
            let sent = proto::GetMetricsRequest {
                scaled_object_ref: has_object.then(|| proto::ScaledObjectRef {
                    scaler_metadata: pairs.into_iter().collect(),
                    ..generated(&[])
                }),
                metric_name: metric,
            };
            let bytes = sent.encode_to_vec();
            let len = bytes.len().max(1);
            let edits = proptest::collection::vec((0..len, any::<u8>()), 0..4);
            (
                Just(bytes),
                edits,
                0..=len,
                proptest::collection::vec(any::<u8>(), 0..4),
            )
                .prop_map(|(mut bytes, edits, cut, tail)| {
                    for (at, byte) in edits {
                        if at < bytes.len() {
                            bytes[at] = byte;
                        }
                    }
                    bytes.truncate(cut);
                    bytes.extend(tail);
                    bytes
                })
        })
    }

    /// Both decoders refuse the bytes, or both decode the same message.
    fn agree<W: std::fmt::Debug, G: PartialEq + std::fmt::Debug>(
        generated: Result<G, DecodeError>,
        wire: Result<W, DecodeError>,
        as_generated: impl Fn(&W) -> G,
    ) -> Result<(), TestCaseError> {
        match (&generated, &wire) {
            (Ok(generated), Ok(wire)) => prop_assert_eq!(&as_generated(wire), generated),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "generated {:?}, wire {:?}", generated, wire),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn any_bytes_decode_as_the_generated_types_decode_them(bytes in mangled_request()) {
            agree(
                proto::GetMetricsRequest::decode(&bytes[..]),
                GetMetricsRequest::decode(&bytes),
                request_as_generated,
            )?;
            agree(
                proto::ScaledObjectRef::decode(&bytes[..]),
                ScaledObjectRef::decode(&bytes),
                as_generated,
            )?;
        }
    }
}
