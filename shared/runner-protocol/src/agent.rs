//! What an agent run adds to the protocol: how the runner reads the agent's output and enforces
//! its budget ([`AgentWatch`], in the spec), and what it reports ([`AgentReport`], in the
//! result). The same types travel on in the terminal event and the stored result.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a provider prints its progress and result on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputParser {
    /// Free text; the final text is the whole output, usage only from lines the parser knows
    /// (aider's `Tokens: ... Cost: ...`).
    Plain,
    /// One JSON document at the end (e.g. `claude -p --output-format json`).
    Json,
    /// One JSON object per line, usage updated as each arrives (e.g. `claude --output-format
    /// stream-json`, `codex exec --json`).
    Jsonl,
}

/// US dollars held as whole micro-dollars, so results compare exactly; JSON shows a decimal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd {
    pub micros: u64,
}

impl Usd {
    pub fn from_dollars(dollars: f64) -> Usd {
        let micros = (dollars * 1_000_000.0).round();
        // Negative and NaN become 0; the float-to-int cast saturates at the top.
        Usd {
            micros: if micros.is_finite() && micros > 0.0 {
                micros as u64
            } else {
                0
            },
        }
    }

    pub fn dollars(self) -> f64 {
        self.micros as f64 / 1_000_000.0
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.6}", self.dollars())
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.dollars())
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        f64::deserialize(deserializer).map(Usd::from_dollars)
    }
}

/// Tokens as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// In the spec of an agent run: how to read its output and when to stop it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentWatch {
    pub parser: OutputParser,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_cost: Option<Usd>,
    /// Variables the runner copies from its own environment into the program's: the provider's
    /// secrets, which are handed to the runner process and never written to the state directory.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Changed files larger than this are listed without content.
    pub max_changed_file_bytes: u64,
    /// Content of all changed files together stops being included past this.
    pub max_changed_total_bytes: u64,
    /// At most this many changed entries are listed (a flood of files is cut, and flagged).
    pub max_changed_files: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    Created,
    Modified,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentEncoding {
    Utf8,
    Base64,
}

/// One workspace entry that differs from what the run started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedFile {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    pub change: FileChange,
    /// Bytes now (0 when deleted).
    pub size: u64,
    /// `None` when deleted, not a regular file (a symlink is listed, never followed), or over the
    /// size caps (then `content_omitted`).
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub encoding: Option<ContentEncoding>,
    #[serde(default)]
    pub content_omitted: bool,
    /// Set for entries that are not regular files (`symlink`, `fifo`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// What an agent run reports besides its exit: written by the runner into the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    /// The agent's final answer as the parser found it.
    pub final_text: String,
    #[serde(default)]
    pub usage: Option<TokenUsage>,
    #[serde(default)]
    pub cost_usd: Option<Usd>,
    #[serde(default)]
    pub changed_files: Vec<ChangedFile>,
    /// More changes existed than `max_changed_files`.
    #[serde(default)]
    pub changed_files_truncated: bool,
    /// Set when the runner stopped the agent because its budget ran out: which one and by how much.
    #[serde(default)]
    pub budget_exceeded: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn usd_is_exact_and_json_shows_dollars() {
        let usd = Usd::from_dollars(0.0123);
        assert_eq!(usd.micros, 12_300);
        assert_eq!(serde_json::to_string(&usd).unwrap(), "0.0123");
        assert_eq!(serde_json::from_str::<Usd>("0.0123").unwrap(), usd);
        assert_eq!(Usd::from_dollars(-1.0).micros, 0);
        assert_eq!(Usd::from_dollars(f64::NAN).micros, 0);
    }
}
