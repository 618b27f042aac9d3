//! The pprof profile format: the messages of `profile.proto`
//! (<https://github.com/google/pprof/blob/main/proto/profile.proto>) that a heap profile uses,
//! as `prost` messages (field numbers as in the `.proto`; the fields smallarena never writes are
//! left out, and a decoder skips them). A file is the encoded [`Profile`], gzip-compressed, as
//! `go tool pprof`, `pprof` and the flame-graph viewers that read pprof expect.
//!
//! Decode a profile written by [`super::dump_pprof`] with `prost`:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::Read;
//! use prost::Message;
//! let mut raw = Vec::new();
//! flate2::read::GzDecoder::new(std::fs::File::open("heap.pb.gz")?).read_to_end(&mut raw)?;
//! let profile = smallarena::profile::pprof::Profile::decode(raw.as_slice())?;
//! println!("{} samples", profile.sample.len());
//! # Ok(()) }
//! ```

#![allow(missing_docs)] // The fields are documented in `profile.proto`; the messages here.

/// A whole profile.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each value of a sample measures: here `inuse_objects`/`count` and
    /// `inuse_space`/`bytes`.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// One per distinct allocating stack.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string the profile uses; index 0 is the empty string.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// `space`/`bytes`: the profile samples bytes allocated.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// The mean sampling interval in bytes.
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A value's type and unit, as string table indices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// The estimated live blocks and bytes allocated from one stack.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Innermost (the allocating function) first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One per `sample_type`.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A return address and the functions (inlined ones first, the caller last) it lies in.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Demangled name, as a string table index.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// The name as the symbol table has it.
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
