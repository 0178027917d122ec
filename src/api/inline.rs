//! The `items` of `POST /v1/batch`: the job's input sent in the request instead of
//! uploaded. Each item becomes one input line, checked by the worker like a file's.

use super::ApiError;
use crate::batch::inline::MAX_ITEMS;
use crate::wire::InlineItem;

/// The largest `POST /v1/batch` body: room for 50,000 items of about a kilobyte.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

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
