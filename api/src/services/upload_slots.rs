//! How many uploads one token may have in flight at once: each holds a connection, a
//! temporary file or multipart upload and a decompressor, so one token must not be able
//! to hold them all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Principal, ServiceError, ServiceResult, Services};
use crate::domain::TokenId;

#[derive(Default)]
pub(super) struct UploadSlots {
    in_flight: Arc<Mutex<HashMap<TokenId, u32>>>,
}

/// One upload in flight; the slot is given back when this is dropped.
pub struct UploadSlot {
    in_flight: Arc<Mutex<HashMap<TokenId, u32>>>,
    token_id: TokenId,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = in_flight.get_mut(&self.token_id) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.token_id);
            }
        }
    }
}

impl Services {
    /// How many uploads a token has in flight now (a gauge for operators and tests).
    pub fn uploads_in_flight(&self, token: &TokenId) -> u32 {
        let in_flight = self.inner.upload_slots.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        in_flight.get(token).copied().unwrap_or(0)
    }

    /// Takes one of the token's upload slots, or answers 429 (nix retries it) when all
    /// `max_uploads_per_token` are busy.
    pub fn upload_slot(&self, principal: &Principal) -> ServiceResult<UploadSlot> {
        let slots = &self.inner.upload_slots;
        let mut in_flight = slots.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = in_flight.entry(principal.token_id().clone()).or_insert(0);
        if *count >= self.limits().max_uploads_per_token {
            return Err(ServiceError::TooManyRequests {
                message: "too many uploads in flight with this token: wait for one to finish",
                retry_after: 1,
            });
        }
        *count += 1;
        Ok(UploadSlot { in_flight: Arc::clone(&slots.in_flight), token_id: principal.token_id().clone() })
    }
}
