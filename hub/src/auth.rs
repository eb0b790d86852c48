//! Tokens: who may read (when reads are protected), publish and roll back,
//! and send registry events. Compared in constant time over their SHA-256,
//! so neither the content nor the length of a token leaks through timing.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token, kept only as its hash; `Debug` never shows it.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// `None` for an empty (or all-blank) token: a blank token is no token.
    pub fn new(token: &str) -> Option<Secret> {
        let token = token.trim();
        (!token.is_empty()).then(|| Secret(Sha256::digest(token.as_bytes()).into()))
    }

    fn matches(&self, offered: &str) -> bool {
        let offered: [u8; 32] = Sha256::digest(offered.as_bytes()).into();
        bool::from(self.0.ct_eq(&offered))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// Publish, rollback (and everything else).
    pub admin: Option<Secret>,
    /// Reads, when `protect_reads`.
    pub read: Option<Secret>,
    /// `POST /api/v1/registry/events` (the registry's notification endpoint).
    pub events: Option<Secret>,
    pub protect_reads: bool,
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Admin,
    Events,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("this endpoint needs a token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the token is not valid for this endpoint")]
    Wrong,
    #[error(
        "no token is configured for this endpoint; set LABFORGE_HUB_ADMIN_TOKEN (or [hub] admin_token_file) to enable it"
    )]
    Disabled,
}

impl Tokens {
    /// May a request with these headers do `access`?
    pub fn check(&self, headers: &HeaderMap, access: Access) -> Result<(), Denied> {
        let accepted: Vec<&Secret> = match access {
            Access::Read if !self.protect_reads => return Ok(()),
            Access::Read => self.read.iter().chain(&self.admin).collect(),
            Access::Admin => self.admin.iter().collect(),
            Access::Events => self.events.iter().chain(&self.admin).collect(),
        };
        if accepted.is_empty() {
            return Err(Denied::Disabled);
        }
        let offered = bearer(headers).ok_or(Denied::Missing)?;
        // Check every accepted token, so the time does not say which matched.
        let mut ok = false;
        for secret in accepted {
            ok |= secret.matches(offered);
        }
        if ok { Ok(()) } else { Err(Denied::Wrong) }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(
                axum::http::header::AUTHORIZATION,
                v.parse().expect("header value"),
            );
        }
        h
    }

    #[test]
    fn reads_are_public_unless_protected() {
        let open = Tokens::default();
        assert_eq!(open.check(&headers(None), Access::Read), Ok(()));
        let closed = Tokens {
            read: Secret::new("r3ad"),
            admin: Secret::new("adm1n"),
            protect_reads: true,
            ..Tokens::default()
        };
        assert_eq!(
            closed.check(&headers(None), Access::Read),
            Err(Denied::Missing)
        );
        assert_eq!(
            closed.check(&headers(Some("Bearer r3ad")), Access::Read),
            Ok(())
        );
        assert_eq!(
            closed.check(&headers(Some("bearer  adm1n ")), Access::Read),
            Ok(())
        );
        assert_eq!(
            closed.check(&headers(Some("Bearer r3a")), Access::Read),
            Err(Denied::Wrong)
        );
        assert_eq!(
            closed.check(&headers(Some("Basic r3ad")), Access::Read),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn admin_needs_the_admin_token_and_is_off_without_one() {
        let none = Tokens::default();
        assert_eq!(
            none.check(&headers(Some("Bearer x")), Access::Admin),
            Err(Denied::Disabled)
        );
        let t = Tokens {
            admin: Secret::new("adm1n"),
            read: Secret::new("r3ad"),
            events: Secret::new("ev"),
            protect_reads: false,
        };
        assert_eq!(
            t.check(&headers(Some("Bearer adm1n")), Access::Admin),
            Ok(())
        );
        assert_eq!(
            t.check(&headers(Some("Bearer r3ad")), Access::Admin),
            Err(Denied::Wrong)
        );
        assert_eq!(
            t.check(&headers(Some("Bearer ev")), Access::Admin),
            Err(Denied::Wrong)
        );
        assert_eq!(t.check(&headers(Some("Bearer ev")), Access::Events), Ok(()));
        assert_eq!(
            t.check(&headers(Some("Bearer adm1n")), Access::Events),
            Ok(())
        );
    }

    #[test]
    fn blank_tokens_are_no_tokens_and_debug_hides_them() {
        assert!(Secret::new("  ").is_none());
        let s = Secret::new("hunter2").expect("a token");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
