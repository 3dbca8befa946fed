//! The server's side of the wire: `ScaledObjectRef` decoded without a map per request.
//!
//! KEDA sends the same `scalerMetadata` on every poll; the trigger cache needs only to read
//! its entries to find the parsed trigger. The generated `ScaledObjectRef` decodes the map
//! into a `HashMap<String, String>` (two `String`s per entry and a table, every request);
//! this one keeps the entries' text in one `String`, in the order they came, and the trigger
//! cache builds a map only when it has to parse. Decoding follows protobuf's rules for a
//! `map<string, string>` field exactly: invalid UTF-8 is a decode error, a missing key or
//! value is empty, unknown fields are skipped and a later entry for the same key wins
//! ([`ScaledObjectRef::scaler_metadata`] yields every entry; its consumers keep the last).
//!
//! The service generated against this type is [`external_scaler_server`]; clients use
//! [`crate::proto`]'s generated types, with which this type is wire-compatible both ways.

// Written by hand, unlike the rest of `proto`: linted as the rest of the crate.
#![warn(clippy::all)]

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType},
};

mod generated {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/wire/externalscaler.rs"));
}

pub use generated::{GetMetricsRequest, external_scaler_server};

/// The service's codec: prost's, with buffers sized for the scaler's messages.
///
/// tonic gives every RPC an 8 KiB buffer to decode its request into and another to encode
/// its answer into. The scaler's requests are a few hundred bytes and its answers fewer than
/// a hundred: with [`BUFFER_BYTES`] buffers, which malloc serves from its per-thread cache, a
/// warm GetMetrics costs about 1,000 fewer instructions of the scaler's 71,000 (BENCHMARKS.md,
/// Performance III). A bigger message still decodes: the buffer grows in steps of that size.
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
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Encoder;
    type Decoder = <tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<T, U>::raw_decoder(buffer_settings())
    }
}

fn buffer_settings() -> tonic::codec::BufferSettings {
    // tonic's own yield threshold (32 KiB): only streams of many messages reach it.
    tonic::codec::BufferSettings::new(BUFFER_BYTES, 32 * 1024)
}

/// `externalscaler.ScaledObjectRef`, with `scalerMetadata` kept as [`EncodedMetadata`].
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ScaledObjectRef {
    pub name: String,
    pub namespace: String,
    pub scaler_metadata: EncodedMetadata,
}

/// The entries of a `map<string, string>`, as they came: every key and value in one string.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct EncodedMetadata {
    text: String,
    /// Per entry, where its key and its value are in `text`.
    spans: Vec<Span>,
}

/// Room made for the entries' text at the first entry, at most (a trigger's metadata is a
/// few hundred bytes; a bigger map grows as a `String` does).
const RESERVE_AT_MOST: usize = 4096;
/// Room made for entries at the first one: more than most triggers have.
const ENTRIES_RESERVED: usize = 8;

type Range = (usize, usize);

#[derive(Clone, Copy, PartialEq, Default, Debug)]
struct Span {
    key: Range,
    value: Range,
}

impl EncodedMetadata {
    /// The entries in the order they came; a key may repeat (the last one counts).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        let text = self.text.as_str();
        self.spans.iter().map(move |span| {
            (
                &text[span.key.0..span.key.1],
                &text[span.value.0..span.value.1],
            )
        })
    }

    /// Entries as they came, repeated keys counted each time.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn push(&mut self, key: &str, value: &str) {
        let key = append(&mut self.text, key);
        let value = append(&mut self.text, value);
        self.spans.push(Span { key, value });
    }

    /// One map entry (a nested message: key = 1, value = 2, in any order, each at most once
    /// in effect), as prost decodes it.
    fn merge_entry(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
        if self.spans.capacity() == 0 {
            // The entries' text is at most what is left of the request: room for it at once
            // instead of one allocation per doubling.
            self.text.reserve(buf.remaining().min(RESERVE_AT_MOST));
            self.spans.reserve(ENTRIES_RESERVED);
        }
        let text = &mut self.text;
        let mut span = Span::default();
        encoding::merge_loop(&mut span, buf, ctx, |span, buf, ctx| {
            let (tag, wire_type) = encoding::decode_key(buf)?;
            match tag {
                1 => span.key = merge_str(text, wire_type, buf)?,
                2 => span.value = merge_str(text, wire_type, buf)?,
                _ => encoding::skip_field(wire_type, tag, buf, ctx)?,
            }
            Ok(())
        })?;
        self.spans.push(span);
        Ok(())
    }
}

fn append(text: &mut String, value: &str) -> Range {
    let start = text.len();
    text.push_str(value);
    (start, text.len())
}

/// A length-delimited UTF-8 field, appended to `text`; where it is.
fn merge_str(
    text: &mut String,
    wire_type: WireType,
    buf: &mut impl Buf,
) -> Result<Range, DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    let len = encoding::decode_varint(buf)?;
    if len > buf.remaining() as u64 {
        return Err(decode_error("buffer underflow"));
    }
    let len = len as usize;
    let not_utf8 = |_| decode_error("invalid string value: data is not UTF-8 encoded");
    let range = if buf.chunk().len() >= len {
        let range = append(
            text,
            std::str::from_utf8(&buf.chunk()[..len]).map_err(not_utf8)?,
        );
        buf.advance(len);
        range
    } else {
        // A field split over the buffer's chunks: rare, copied once more.
        let mut bytes = vec![0; len];
        buf.copy_to_slice(&mut bytes);
        append(text, std::str::from_utf8(&bytes).map_err(not_utf8)?)
    };
    Ok(range)
}

/// prost offers a hand-written decoder no other way to make its error than this constructor,
/// deprecated for removal in its next major version (which changes the `Message` trait too).
#[allow(deprecated)]
fn decode_error(description: &'static str) -> DecodeError {
    DecodeError::new(description)
}

/// A string field (tag, length, bytes); nothing for an empty one, as proto3 encodes it.
fn encode_str(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        encoding::encode_key(tag, WireType::LengthDelimited, buf);
        encoding::encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}

fn str_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        encoding::key_len(tag) + encoding::encoded_len_varint(value.len() as u64) + value.len()
    }
}

fn entry_len(key: &str, value: &str) -> usize {
    str_len(1, key) + str_len(2, value)
}

impl Message for ScaledObjectRef {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_str(1, &self.name, buf);
        encode_str(2, &self.namespace, buf);
        for (key, value) in self.scaler_metadata.entries() {
            encoding::encode_key(3, WireType::LengthDelimited, buf);
            encoding::encode_varint(entry_len(key, value) as u64, buf);
            encode_str(1, key, buf);
            encode_str(2, value, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.name, buf, ctx),
            2 => encoding::string::merge(wire_type, &mut self.namespace, buf, ctx),
            3 => self.scaler_metadata.merge_entry(wire_type, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let entries: usize = self
            .scaler_metadata
            .entries()
            .map(|(key, value)| {
                let len = entry_len(key, value);
                encoding::key_len(3) + encoding::encoded_len_varint(len as u64) + len
            })
            .sum();
        str_len(1, &self.name) + str_len(2, &self.namespace) + entries
    }

    fn clear(&mut self) {
        *self = ScaledObjectRef::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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

    fn as_map(metadata: &EncodedMetadata) -> HashMap<String, String> {
        metadata
            .entries()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_what_the_generated_type_encodes_and_back() {
        let pairs = [
            ("source", "redis-main"),
            ("keys", "a,b"),
            ("", "empty key"),
            ("empty", ""),
        ];
        let sent = generated(&pairs);
        let wire = ScaledObjectRef::decode(&sent.encode_to_vec()[..]).unwrap();
        assert_eq!(
            (wire.name.as_str(), wire.namespace.as_str()),
            ("worker", "team-a")
        );
        assert_eq!(as_map(&wire.scaler_metadata), sent.scaler_metadata);
        assert_eq!(wire.scaler_metadata.len(), 4);
        let back = proto::ScaledObjectRef::decode(&wire.encode_to_vec()[..]).unwrap();
        assert_eq!(back, sent);
        assert_eq!(wire.encoded_len(), sent.encoded_len());
    }

    #[test]
    fn a_repeated_key_keeps_every_entry_in_order_and_the_generated_map_keeps_the_last() {
        let mut wire = ScaledObjectRef::default();
        wire.scaler_metadata.push("target", "1");
        wire.scaler_metadata.push("target", "2");
        let bytes = wire.encode_to_vec();
        let generated = proto::ScaledObjectRef::decode(&bytes[..]).unwrap();
        assert_eq!(generated.scaler_metadata["target"], "2");
        let decoded = ScaledObjectRef::decode(&bytes[..]).unwrap();
        let entries: Vec<_> = decoded.scaler_metadata.entries().collect();
        assert_eq!(entries, [("target", "1"), ("target", "2")]);
        assert_eq!(as_map(&decoded.scaler_metadata), generated.scaler_metadata);
    }

    #[test]
    fn decoding_errors_are_the_generated_types_errors() {
        // An entry whose value is not UTF-8: field 3 { field 2: [0xff] }.
        let bad_utf8 = [0x1a, 0x03, 0x12, 0x01, 0xff];
        assert!(proto::ScaledObjectRef::decode(&bad_utf8[..]).is_err());
        assert!(ScaledObjectRef::decode(&bad_utf8[..]).is_err());
        // An entry that claims more bytes than there are.
        let short = [0x1a, 0x05, 0x0a, 0x01, b'k'];
        assert!(proto::ScaledObjectRef::decode(&short[..]).is_err());
        assert!(ScaledObjectRef::decode(&short[..]).is_err());
        // A key whose length runs past its entry.
        let overrun = [0x1a, 0x02, 0x0a, 0x05, b'k', b'e', b'y', b'!', b'!'];
        assert!(proto::ScaledObjectRef::decode(&overrun[..]).is_err());
        assert!(ScaledObjectRef::decode(&overrun[..]).is_err());
        // Unknown fields, inside an entry and outside, are skipped by both.
        let unknown = [0x1a, 0x05, 0x0a, 0x01, b'k', 0x18, 0x07, 0x20, 0x01];
        let generated = proto::ScaledObjectRef::decode(&unknown[..]).unwrap();
        let wire = ScaledObjectRef::decode(&unknown[..]).unwrap();
        assert_eq!(as_map(&wire.scaler_metadata), generated.scaler_metadata);
        assert_eq!(generated.scaler_metadata[&"k".to_string()], "");
    }

    #[test]
    fn a_get_metrics_request_carries_it() {
        let sent = proto::GetMetricsRequest {
            scaled_object_ref: Some(generated(&[("metric", "redis-list")])),
            metric_name: "redis-list-x-0a1b2c3d".into(),
        };
        let wire = GetMetricsRequest::decode(&sent.encode_to_vec()[..]).unwrap();
        assert_eq!(wire.metric_name, sent.metric_name);
        let so = wire.scaled_object_ref.unwrap();
        assert_eq!(
            so.scaler_metadata.entries().collect::<Vec<_>>(),
            [("metric", "redis-list")]
        );
    }
}
