//! Realisations of content-addressed derivation outputs, each tied to the published path it
//! names (the row goes when the path does).

use std::collections::BTreeMap;

use larder_protocol::realisation::{DrvOutputId, Realisation};
use larder_protocol::signing::Signature;
use larder_protocol::store_path::StorePath;
use sqlx::FromRow;

use super::Database;
use crate::domain::{CacheId, RealisationId};

#[derive(FromRow)]
struct RealisationRow {
    id: i64,
    drv_output: String,
    store_path: String,
    /// Newline-separated `<drv output> <path base name>`.
    dependencies: String,
    /// Newline-separated `name:base64`.
    sigs: String,
}

impl TryFrom<RealisationRow> for (RealisationId, Realisation) {
    type Error = anyhow::Error;

    fn try_from(row: RealisationRow) -> anyhow::Result<Self> {
        let corrupt = |what: &str| anyhow::anyhow!("realisation row {} has a bad {what}", row.id);
        let mut dependencies = BTreeMap::new();
        for line in row.dependencies.lines().filter(|l| !l.is_empty()) {
            let (id, path) = line.split_once(' ').ok_or_else(|| corrupt("dependency"))?;
            dependencies.insert(
                DrvOutputId::parse(id).map_err(|_| corrupt("dependency id"))?,
                StorePath::from_base_name(path).map_err(|_| corrupt("dependency path"))?,
            );
        }
        let realisation = Realisation {
            id: DrvOutputId::parse(&row.drv_output).map_err(|_| corrupt("id"))?,
            out_path: StorePath::parse(&row.store_path).map_err(|_| corrupt("store path"))?,
            dependencies,
            signatures: row
                .sigs
                .lines()
                .filter(|s| !s.is_empty())
                .map(Signature::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| corrupt("signature"))?,
        };
        Ok((RealisationId(row.id), realisation))
    }
}

/// Why a realisation was not stored.
#[derive(Debug)]
pub enum RealisationRefused {
    /// Its output path is not published in the cache.
    OutPathMissing,
    /// The cache already has this derivation output realised as another path.
    Conflict(StorePath),
}

fn joined_dependencies(realisation: &Realisation) -> String {
    realisation.dependencies.iter().map(|(id, path)| format!("{id} {}", path.base_name())).collect::<Vec<_>>().join("\n")
}

fn joined_signatures(signatures: &[Signature]) -> String {
    signatures.iter().map(Signature::to_nix_string).collect::<Vec<_>>().join("\n")
}

const COLUMNS: &str = "r.id, r.drv_output, p.store_path, r.dependencies, r.sigs";

impl Database {
    /// Stores a realisation, or replaces the signatures and dependencies of the same one
    /// (same output path) stored before. One statement: the output path must be published
    /// at that moment, and a realisation is never moved to another path.
    pub async fn put_realisation(
        &self,
        cache: CacheId,
        realisation: &Realisation,
        now: i64,
    ) -> anyhow::Result<Result<(), RealisationRefused>> {
        let stored = sqlx::query(
            "INSERT INTO realisations (cache_id, drv_output, path_id, dependencies, sigs, created_at) \
             SELECT $1, $2, p.id, $5, $6, $7 FROM paths p WHERE p.cache_id = $1 AND p.hash_part = $3 AND p.store_path = $4 \
             ON CONFLICT (cache_id, drv_output) DO UPDATE SET dependencies = excluded.dependencies, sigs = excluded.sigs \
             WHERE realisations.path_id = excluded.path_id",
        )
        .bind(cache.0)
        .bind(realisation.id.to_string())
        .bind(realisation.out_path.hash_part())
        .bind(realisation.out_path.to_absolute())
        .bind(joined_dependencies(realisation))
        .bind(joined_signatures(&realisation.signatures))
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if stored > 0 {
            return Ok(Ok(()));
        }
        // Nothing written: either the path is missing or another one is realised already.
        Ok(Err(match self.realisation(cache, &realisation.id).await? {
            Some((_, existing)) if existing.out_path != realisation.out_path => RealisationRefused::Conflict(existing.out_path),
            _ => RealisationRefused::OutPathMissing,
        }))
    }

    pub async fn realisation(&self, cache: CacheId, id: &DrvOutputId) -> anyhow::Result<Option<(RealisationId, Realisation)>> {
        let row: Option<RealisationRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM realisations r JOIN paths p ON p.id = r.path_id WHERE r.cache_id = $1 AND r.drv_output = $2"
        ))
        .bind(cache.0)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// A page of a cache's realisations in id order, after `after` (for walking all of them).
    pub async fn realisations_page(
        &self,
        cache: CacheId,
        after: Option<RealisationId>,
        limit: i64,
    ) -> anyhow::Result<Vec<(RealisationId, Realisation)>> {
        let rows: Vec<RealisationRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM realisations r JOIN paths p ON p.id = r.path_id \
             WHERE r.cache_id = $1 AND r.id > $2 ORDER BY r.id LIMIT $3"
        ))
        .bind(cache.0)
        .bind(after.map_or(0, |r| r.0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    pub async fn set_realisation_signatures(&self, id: RealisationId, signatures: &[Signature]) -> anyhow::Result<()> {
        sqlx::query("UPDATE realisations SET sigs = $2 WHERE id = $1")
            .bind(id.0)
            .bind(joined_signatures(signatures))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
