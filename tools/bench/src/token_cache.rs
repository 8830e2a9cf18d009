//! API tokens kept between bench runs, so repeated runs do not log in again (logins are rate
//! limited per client: a few runs a minute with several users would be refused).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Tokens by `"{url} {username}"`, in a file only its owner can read.
pub(crate) struct TokenCache {
    path: PathBuf,
    tokens: HashMap<String, String>,
}

impl TokenCache {
    /// Reads the cache; a missing or unreadable file is an empty cache.
    pub(crate) fn load(path: &Path) -> Self {
        let tokens = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            path: path.to_owned(),
            tokens,
        }
    }

    pub(crate) fn get(&self, url: &str, username: &str) -> Option<&str> {
        self.tokens.get(&key(url, username)).map(String::as_str)
    }

    pub(crate) fn put(&mut self, url: &str, username: &str, token: String) {
        self.tokens.insert(key(url, username), token);
    }

    pub(crate) fn save(&self) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        file.write_all(&serde_json::to_vec(&self.tokens)?)?;
        Ok(())
    }
}

fn key(url: &str, username: &str) -> String {
    format!("{url} {username}")
}

/// Whether `token` still signs in (not revoked, its user not deleted).
pub(crate) async fn still_valid(client: &reqwest::Client, url: &str, token: &str) -> bool {
    client
        .get(format!("{url}/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}
