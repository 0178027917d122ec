//! The `items` of `POST /v1/batch`: the job's input sent in the request instead of
//! uploaded. Each item becomes one input line, checked by the worker like a file's.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::ApiError;
use crate::batch::inline::MAX_ITEMS;
use crate::batch::lines::MAX_ID_CHARS;

/// The largest `POST /v1/batch` body: room for 50,000 items of about a kilobyte.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One inline item: any JSON object, kept as given. Its fields are not checked here:
/// like an uploaded line, a bad item becomes an error row of the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InlineItem(pub Map<String, Value>);

impl PartialSchema for InlineItem {
    fn schema() -> RefOr<Schema> {
        let any = |description: String| {
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .description(Some(description))
        };
        ObjectBuilder::new()
            .description(Some(
                "One input line, as in an uploaded file. Checked when the job runs: an item \
                 without a usable `text` or with a bad `id` is an error row (`missing_text`, \
                 `empty_text`, `invalid_text`, `text_not_string`, `invalid_id`), not a refused request.",
            ))
            .property(
                "text",
                any("The text to classify: a non-empty string.".to_string()),
            )
            .property(
                "id",
                any(format!(
                    "Echoed in the result row: a string of up to {MAX_ID_CHARS} characters \
                     or a number (`custom_id` is read too)."
                )),
            )
            .into()
    }
}

impl ToSchema for InlineItem {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("InlineItem")
    }
}

/// 1 to [`MAX_ITEMS`] items.
pub fn check_items(items: &[InlineItem]) -> Result<(), ApiError> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ApiError::validation(
            "items",
            format!(
                "items holds 1-{MAX_ITEMS} items (got {}); upload larger inputs as a file",
                items.len()
            ),
        ));
    }
    Ok(())
}
