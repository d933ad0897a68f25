//! The messages of pprof's `profile.proto`
//! (<https://github.com/google/pprof/blob/main/proto/profile.proto>), written with
//! `prost` derives so no `protoc` is needed. Field numbers follow the .proto exactly.

/// The whole profile.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each sample value means (`goroutine`/`count`).
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// Samples: one per distinct (stack, labels).
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// Executable mappings.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// One per distinct address.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Deduplicated functions.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// All strings; index 0 is "".
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regex of frames to drop (string index).
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regex of frames to keep (string index).
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// When the profile was taken, Unix nanoseconds.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Duration of the profile, nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// Kind of events between samples.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Events between samples.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// Index of the default sample type (string index of its type).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A (type, unit) pair, both string indices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    /// String index of the type.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// String index of the unit.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One sample.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Location ids, innermost first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Labels.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A sample label: string (`str`) or numeric (`num`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// String index of the key.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String index of the value.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// Numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// String index of the numeric unit.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// An executable mapping.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    /// Unique nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Start address.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// End address (exclusive).
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset of `memory_start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// String index of the file name.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// String index of the build id.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Locations in this mapping have function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// ... file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// ... line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// ... inlined frames.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// One code address, with its inlined frames as several lines.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Unique nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Mapping id (0 if none).
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The address.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost first: `line[0]` is the innermost inlined function.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Folded (merged) location.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// One function frame of a location.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    /// Function id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Source line.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Source column.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    /// Unique nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// String index of the human-readable name.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// String index of the system (mangled) name.
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// String index of the source file.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// First line of the function.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
