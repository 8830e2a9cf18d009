//! The languages this host can run: those of `runtime.languages` whose interpreter exists.

use shared::config::LanguageConfig;

#[derive(Debug, Clone, Default)]
pub struct Languages {
    available: Vec<LanguageConfig>,
}

impl Languages {
    /// Keeps the languages whose `command[0]` is an executable file; the others are logged and
    /// hidden (a host without ruby simply does not offer ruby).
    pub fn from_config(languages: &[LanguageConfig]) -> Languages {
        let mut available = Vec::new();
        for language in languages {
            if language.is_available() {
                available.push(language.clone());
            } else {
                tracing::warn!(
                    lang = %language.lang,
                    version = %language.version,
                    interpreter = ?language.command.first(),
                    "interpreter missing or not executable; language hidden"
                );
            }
        }
        Languages { available }
    }

    /// The exact `lang` and `version`; an empty version means the first one configured.
    pub fn get(&self, lang: &str, version: &str) -> Option<&LanguageConfig> {
        self.available
            .iter()
            .find(|l| l.lang == lang && (version.is_empty() || l.version == version))
    }

    pub fn all(&self) -> &[LanguageConfig] {
        &self.available
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn language(lang: &str, program: &str) -> LanguageConfig {
        LanguageConfig {
            lang: lang.into(),
            version: "1".into(),
            file_name: "main".into(),
            command: vec![program.into(), "{file}".into()],
            env: Default::default(),
            image: String::new(),
            example: String::new(),
            memory_mb: None,
            max_processes: None,
        }
    }

    #[test]
    fn missing_or_relative_interpreters_are_hidden() {
        let languages = Languages::from_config(&[
            language("bash", "/bin/bash"),
            language("ruby", "/usr/bin/definitely-not-ruby"),
            language("rel", "bash"),
            language("dir", "/usr"),
        ]);
        assert!(languages.get("bash", "1").is_some());
        assert!(languages.get("bash", "").is_some());
        assert!(languages.get("bash", "2").is_none());
        assert!(languages.get("ruby", "1").is_none());
        assert!(languages.get("rel", "1").is_none());
        assert!(languages.get("dir", "1").is_none());
        assert_eq!(languages.all().len(), 1);
    }
}
