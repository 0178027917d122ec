//! Schema-only components of the API description: the rules a request's strings and
//! maps follow (a readable text, a label name, metadata), named once and referenced by
//! the request types (`#[schema(value_type = ...)]`). Requests hold plain `String`s.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::PartialSchema;

/// A string the model can read: one character other than whitespace, and no NUL
/// (`\u0000`). The server also counts a string of only invisible characters (zero-width
/// spaces, soft hyphens, bidi marks...) as empty, which JSON Schema cannot say (the
/// contract test lets exactly that rule through, scripts/contract_hooks.py).
pub const READABLE: &str = r"^[^\u0000]*[^\s\u0000][^\u0000]*$";
/// No NUL (`\u0000`) anywhere: never part of real text, and Postgres cannot store it.
pub const NO_NUL: &str = r"^[^\u0000]*$";

fn string_schema(
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: &str,
    description: &str,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(min_length)
        .max_length(max_length)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// A text to classify, or a label's example text (described only: requests hold
/// `String`s).
pub struct Text;

impl PartialSchema for Text {
    fn schema() -> RefOr<Schema> {
        string_schema(
            Some(1),
            None,
            READABLE,
            "Not empty: at least one character other than whitespace and invisible \
             characters (zero-width spaces, soft hyphens...); no NUL",
        )
    }
}
impl utoipa::ToSchema for Text {}

/// A label name.
pub struct LabelName;

impl PartialSchema for LabelName {
    fn schema() -> RefOr<Schema> {
        string_schema(
            Some(1),
            Some(100),
            READABLE,
            "Up to 100 characters (counted without leading and trailing whitespace), not \
             empty (as a text); distinct from the other labels once trimmed",
        )
    }
}
impl utoipa::ToSchema for LabelName {}

/// A sentence saying what a label covers.
pub struct LabelDescription;

impl PartialSchema for LabelDescription {
    fn schema() -> RefOr<Schema> {
        string_schema(
            None,
            Some(1000),
            NO_NUL,
            "Up to 1,000 characters; blank means none",
        )
    }
}
impl utoipa::ToSchema for LabelDescription {}

/// One label's example texts.
pub struct LabelExamples;

impl PartialSchema for LabelExamples {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(Text::schema())
            .max_items(Some(64))
            .description(Some("Up to 64 example texts of a label"))
            .into()
    }
}
impl utoipa::ToSchema for LabelExamples {}

/// A batch job's metadata.
pub struct Metadata;

impl PartialSchema for Metadata {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .max_properties(Some(16))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(64)),
            ))
            .additional_properties(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(512)),
            ))
            .description(Some(
                "Up to 16 entries: keys of 1-64 characters, values of up to 512",
            ))
            .into()
    }
}
impl utoipa::ToSchema for Metadata {}
