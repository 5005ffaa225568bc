//! Single-use, expiring tokens: the only thing that stands between a
//! streaming URL and a shell in a container. A token names one request the
//! CRI service approved; the first connection that presents it consumes it,
//! and an unused one dies after its time to live (kubelet: one minute).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

/// Random bytes per token: 128 bits cannot be guessed within a token's life.
const TOKEN_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "too many outstanding streaming requests ({0}); retry when some have been used or expired"
    )]
    Exhausted(usize),
    #[error("cannot read random bytes for a streaming token from /dev/urandom: {0}")]
    Random(#[source] std::io::Error),
}

/// Approved requests waiting for their connection.
pub struct TokenCache<T> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> TokenCache<T> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TokenCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `request` and returns the token that redeems it once.
    pub fn insert(&self, request: T) -> Result<String, TokenError> {
        let token = random_token()?;
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, (expiry, _)| *expiry > now);
        if entries.len() >= self.capacity {
            return Err(TokenError::Exhausted(self.capacity));
        }
        entries.insert(token.clone(), (now + self.ttl, request));
        Ok(token)
    }

    /// Takes the request a token names, if it exists and has not expired.
    /// Either way the token is gone afterwards.
    pub fn consume(&self, token: &str) -> Option<T> {
        let (expiry, request) = self.lock().remove(token)?;
        (Instant::now() < expiry).then_some(request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, T)>> {
        // A panic while holding the lock leaves a consistent map (every
        // operation is a single insert/remove), so a poisoned lock is usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn random_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(TokenError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_redeems_once() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        let token = cache.insert(7).unwrap();
        assert_eq!(cache.consume(&token), Some(7));
        assert_eq!(cache.consume(&token), None);
    }

    #[test]
    fn an_expired_token_redeems_nothing() {
        let cache = TokenCache::new(Duration::ZERO, 10);
        let token = cache.insert(7).unwrap();
        assert_eq!(cache.consume(&token), None);
    }

    #[test]
    fn capacity_bounds_outstanding_tokens() {
        let cache = TokenCache::new(Duration::from_secs(60), 2);
        let first = cache.insert(1).unwrap();
        cache.insert(2).unwrap();
        assert!(matches!(cache.insert(3), Err(TokenError::Exhausted(2))));
        cache.consume(&first);
        cache.insert(3).unwrap();
    }

    #[test]
    fn tokens_are_distinct_and_url_safe() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
