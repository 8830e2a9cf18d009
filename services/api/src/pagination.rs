//! A user's own documents in collections whose `_id` is a UUIDv7 (time-ordered): cursor pages,
//! newest first, where the cursor is the last id of the previous page, so a page never repeats
//! or skips an item when new ones arrive meanwhile; and deletes by owner.

use bson::{Document, doc};
use futures::TryStreamExt as _;
use mongodb::Collection;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// `limit` (1-100, default 20) and `cursor` (`next_cursor` of the previous page), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = match limit {
            None | Some("") => DEFAULT_LIMIT,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| ApiError::bad_request("invalid_limit", "limit: 1-100"))?,
        };
        let cursor = match cursor {
            None | Some("") => None,
            Some(raw) => Some(
                uuid::Uuid::parse_str(raw)
                    .map_err(|_| {
                        ApiError::bad_request("invalid_cursor", "cursor is not one we issued")
                    })?
                    .to_string(),
            ),
        };
        Ok(Self { limit, cursor })
    }

    /// One page of `collection` matching `filter`, and the cursor of the next page.
    pub async fn fetch<T>(
        &self,
        collection: &Collection<T>,
        mut filter: Document,
        id_of: impl Fn(&T) -> &str,
    ) -> Result<(Vec<T>, Option<String>), ApiError>
    where
        T: DeserializeOwned + Send + Sync,
    {
        if let Some(cursor) = &self.cursor {
            filter.insert("_id", doc! { "$lt": cursor });
        }
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let mut items: Vec<T> = collection
            .find(filter)
            .sort(doc! { "_id": -1 })
            .limit(i64::from(self.limit) + 1)
            .await?
            .try_collect()
            .await?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        let next = if has_more {
            items.last().map(|item| id_of(item).to_owned())
        } else {
            None
        };
        Ok((items, next))
    }
}

/// Deletes `id` if `user_id` owns it: 204, else 404 (another user's id looks unknown).
pub async fn delete_owned<T: Send + Sync>(
    collection: &Collection<T>,
    id: &str,
    user_id: &str,
) -> Result<axum::http::StatusCode, ApiError> {
    let outcome = collection
        .delete_one(doc! { "_id": id, "user_id": user_id })
        .await?;
    if outcome.deleted_count == 0 {
        return Err(ApiError::not_found());
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn limits_and_cursors_are_checked() {
        let page = PageRequest::parse(None, None).unwrap();
        assert_eq!(page.limit, DEFAULT_LIMIT);
        assert!(PageRequest::parse(Some("0"), None).is_err());
        assert!(PageRequest::parse(Some("101"), None).is_err());
        assert!(PageRequest::parse(None, Some("x")).is_err());
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(
            PageRequest::parse(Some("5"), Some(&id)).unwrap(),
            PageRequest {
                limit: 5,
                cursor: Some(id)
            }
        );
    }
}
