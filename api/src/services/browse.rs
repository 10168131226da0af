//! What the dashboard shows of a cache's contents: its paths, page by page, and one path
//! in full. Read permission, as for substituting.

use larder_protocol::store_path::{StorePath, StorePathHash};

use super::{ServiceError, ServiceResult, Services};
use crate::domain::{CacheName, Permission, PublishedPath};
use crate::services::Principal;

/// One page of a cache's paths, newest push first.
pub struct PathPage {
    /// Each path with when it was pushed (Unix seconds).
    pub paths: Vec<(PublishedPath, i64)>,
    pub has_more: bool,
}

/// A path with what the cache knows around it.
pub struct PathDetails {
    pub path: PublishedPath,
    pub pushed_at: i64,
    /// Which of its references this cache holds (the others are, e.g., on cache.nixos.org).
    pub held_references: Vec<StorePathHash>,
}

/// Most store paths one missing-paths question may name.
pub const MAX_MISSING_PATHS_QUERY: usize = 10_000;

/// Longest search text taken.
const MAX_SEARCH: usize = 200;

impl Services {
    /// Page `page` (0-based) of `per_page` paths; only those whose store path contains
    /// `search` (a name or a hash, any case) when it is not empty.
    pub async fn browse_paths(
        &self,
        principal: Option<&Principal>,
        name: &CacheName,
        search: &str,
        page: u32,
        per_page: u32,
    ) -> ServiceResult<PathPage> {
        let cache = self.authorize(name, principal, Permission::Read).await?;
        let search = search.trim();
        if search.len() > MAX_SEARCH {
            return Err(ServiceError::BadRequest(format!("search text is at most {MAX_SEARCH} bytes")));
        }
        let search = (!search.is_empty()).then_some(search);
        let per_page = i64::from(per_page.max(1));
        let offset = i64::from(page) * per_page;
        let mut paths = self.db().search_paths(cache.id, search, offset, per_page + 1).await?;
        let has_more = paths.len() as i64 > per_page;
        paths.truncate(per_page as usize);
        Ok(PathPage { paths, has_more })
    }

    /// Which of `store_paths` the cache has no path for, in the order asked (what a pusher
    /// asks once before uploading). Read permission, as for the narinfos it stands for.
    pub async fn missing_paths(
        &self,
        principal: Option<&Principal>,
        name: &CacheName,
        store_paths: &[String],
    ) -> ServiceResult<Vec<String>> {
        let cache = self.authorize(name, principal, Permission::Read).await?;
        if store_paths.len() > MAX_MISSING_PATHS_QUERY {
            return Err(ServiceError::BadRequest(format!(
                "{} store paths asked at once: the most is {MAX_MISSING_PATHS_QUERY}",
                store_paths.len()
            )));
        }
        let parsed: Vec<StorePath> = store_paths
            .iter()
            .map(|p| StorePath::parse(p).map_err(|e| ServiceError::BadRequest(format!("'{p}' is not a store path: {e}"))))
            .collect::<Result<_, _>>()?;
        let hashes: Vec<&StorePathHash> = parsed.iter().map(StorePath::hash).collect();
        let missing: std::collections::HashSet<&str> =
            self.db().missing_paths(cache.id, &hashes).await?.into_iter().map(StorePathHash::as_str).collect();
        Ok(parsed.iter().filter(|p| missing.contains(p.hash().as_str())).map(StorePath::to_absolute).collect())
    }

    pub async fn path_details(&self, principal: Option<&Principal>, name: &CacheName, hash: &StorePathHash) -> ServiceResult<PathDetails> {
        let cache = self.authorize(name, principal, Permission::Read).await?;
        let not_found = || ServiceError::NotFound(format!("cache '{}' has no path {hash}", cache.name));
        let path = self.db().path(cache.id, hash).await?.ok_or_else(not_found)?;
        let pushed_at = self.db().path_pushed_at(path.id).await?.ok_or_else(not_found)?;
        let references: Vec<&StorePathHash> = path.references.iter().map(|r| r.hash()).collect();
        let missing = self.db().missing_paths(cache.id, &references).await?;
        let held_references = references.into_iter().filter(|r| !missing.contains(r)).cloned().collect();
        Ok(PathDetails { path, pushed_at, held_references })
    }
}
