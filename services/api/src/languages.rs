//! The languages this host can run: the configured ones whose interpreter exists here.

use shared::config::LanguageConfig;

/// One offered language with its versions in configuration order (the first is the default).
#[derive(Debug, Clone)]
pub struct Language {
    pub lang: String,
    pub versions: Vec<LanguageConfig>,
}

#[derive(Debug, Clone, Default)]
pub struct LanguageRegistry {
    languages: Vec<Language>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("language {0:?} is not offered")]
    UnknownLanguage(String),
    #[error("version {version:?} of {lang} is not offered")]
    UnknownVersion { lang: String, version: String },
}

/// 400 `unknown_language` / `unknown_version`.
impl From<LookupError> for crate::error::ApiError {
    fn from(error: LookupError) -> Self {
        let code = match error {
            LookupError::UnknownLanguage(_) => "unknown_language",
            LookupError::UnknownVersion { .. } => "unknown_version",
        };
        Self::bad_request(code, error.to_string())
    }
}

impl LanguageRegistry {
    /// The languages the executors can run. Locally, those whose interpreter this host has (the
    /// same test k8s-worker applies): offering one the sandbox cannot start would only produce
    /// failed executions. On Kubernetes every configured language: its image carries it.
    pub fn from_config(runtime: &shared::config::RuntimeConfig) -> Self {
        match runtime.kind {
            shared::config::RuntimeKind::Kubernetes => {
                Self::with_filter(&runtime.languages, |_| true)
            }
            shared::config::RuntimeKind::Local => {
                Self::with_filter(&runtime.languages, shared::config::is_runnable_interpreter)
            }
        }
    }

    pub fn with_filter(configured: &[LanguageConfig], available: impl Fn(&str) -> bool) -> Self {
        let mut languages: Vec<Language> = Vec::new();
        for entry in configured {
            let present = entry.command.first().is_some_and(|p| available(p));
            if !present {
                tracing::info!(lang = %entry.lang, version = %entry.version, "interpreter missing; language not offered");
                continue;
            }
            match languages.iter_mut().find(|l| l.lang == entry.lang) {
                Some(language) => language.versions.push(entry.clone()),
                None => languages.push(Language {
                    lang: entry.lang.clone(),
                    versions: vec![entry.clone()],
                }),
            }
        }
        Self { languages }
    }

    pub fn languages(&self) -> &[Language] {
        &self.languages
    }

    /// The configuration for `lang` at `version` (the first configured version when `None`).
    pub fn resolve(
        &self,
        lang: &str,
        version: Option<&str>,
    ) -> Result<&LanguageConfig, LookupError> {
        let language = self
            .languages
            .iter()
            .find(|l| l.lang == lang)
            .ok_or_else(|| LookupError::UnknownLanguage(lang.to_owned()))?;
        let found = match version {
            None => language.versions.first(),
            Some(v) => language.versions.iter().find(|c| c.version == v),
        };
        found.ok_or_else(|| LookupError::UnknownVersion {
            lang: lang.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(lang: &str, version: &str, program: &str) -> LanguageConfig {
        LanguageConfig {
            lang: lang.into(),
            version: version.into(),
            file_name: "main".into(),
            command: vec![program.into()],
            env: Default::default(),
            image: String::new(),
            example: String::new(),
            memory_mb: None,
            max_processes: None,
        }
    }

    #[test]
    fn on_kubernetes_every_configured_language_is_offered() {
        let mut runtime = shared::config::RuntimeConfig {
            languages: vec![lang("ruby", "3.1", "/not/on/this/host")],
            ..Default::default()
        };
        assert!(
            LanguageRegistry::from_config(&runtime)
                .languages()
                .is_empty()
        );
        runtime.kind = shared::config::RuntimeKind::Kubernetes;
        assert_eq!(LanguageRegistry::from_config(&runtime).languages().len(), 1);
    }

    #[test]
    fn missing_interpreters_are_hidden_and_the_first_version_is_the_default() {
        let configured = [
            lang("python", "3.11", "/ok"),
            lang("python", "3.12", "/ok"),
            lang("ruby", "3.1", "/missing"),
        ];
        let registry = LanguageRegistry::with_filter(&configured, |p| p == "/ok");
        assert_eq!(registry.languages().len(), 1);
        assert_eq!(
            registry.resolve("python", None).map(|c| c.version.as_str()),
            Ok("3.11")
        );
        assert_eq!(
            registry
                .resolve("python", Some("3.12"))
                .map(|c| c.version.as_str()),
            Ok("3.12")
        );
        assert!(matches!(
            registry.resolve("python", Some("2.7")),
            Err(LookupError::UnknownVersion { .. })
        ));
        assert!(matches!(
            registry.resolve("ruby", None),
            Err(LookupError::UnknownLanguage(_))
        ));
    }
}
