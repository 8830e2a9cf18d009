//! Reads an agent's stdout as it arrives: its final text, token usage and cost, per the
//! provider's [`OutputParser`].

use kiln_runner_protocol::agent::{OutputParser, TokenUsage, Usd};
use serde_json::Value;

/// The final text kept, at most (the full output is in stdout anyway).
pub(crate) const MAX_FINAL_TEXT_BYTES: usize = 64 * 1024;
/// A line longer than this is not parsed (it is still in stdout).
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct Parser {
    kind: OutputParser,
    /// The unterminated end of what arrived so far.
    partial: Vec<u8>,
    /// `Json` and `Plain` keep the whole output (bounded by the log's own cap).
    whole: Vec<u8>,
    usage: Option<TokenUsage>,
    cost: Option<Usd>,
    /// The provider's closing answer (`type: result`), when it gave one.
    result_text: Option<String>,
    last_text: String,
}

impl Parser {
    pub(crate) fn new(kind: OutputParser) -> Parser {
        Parser {
            kind,
            partial: Vec::new(),
            whole: Vec::new(),
            usage: None,
            cost: None,
            result_text: None,
            last_text: String::new(),
        }
    }

    pub(crate) fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    pub(crate) fn cost(&self) -> Option<Usd> {
        self.cost
    }

    /// Takes the next bytes of stdout.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.kind != OutputParser::Jsonl {
            self.whole.extend_from_slice(bytes);
        }
        if self.kind == OutputParser::Json {
            return; // one document, read at the end
        }
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(&line[..end]);
        }
        if self.partial.len() > MAX_LINE_BYTES {
            self.partial.clear();
        }
    }

    /// The output ended: the final text (capped), usage and cost.
    pub(crate) fn finish(mut self) -> (String, Option<TokenUsage>, Option<Usd>) {
        let rest = std::mem::take(&mut self.partial);
        if !rest.is_empty() {
            self.line(&rest);
        }
        let text = match self.kind {
            OutputParser::Json => {
                match serde_json::from_slice::<Value>(&self.whole) {
                    Ok(Value::Array(items)) => items.iter().for_each(|v| self.json(v)),
                    Ok(value) => self.json(&value),
                    Err(_) => {}
                }
                self.result_text.take().unwrap_or(self.last_text)
            }
            OutputParser::Jsonl => self.result_text.take().unwrap_or(self.last_text),
            OutputParser::Plain => String::from_utf8_lossy(&self.whole).trim().to_owned(),
        };
        (tail(text, MAX_FINAL_TEXT_BYTES), self.usage, self.cost)
    }

    fn line(&mut self, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        match self.kind {
            OutputParser::Jsonl => {
                if let Ok(value) = serde_json::from_str::<Value>(line.trim()) {
                    self.json(&value);
                }
            }
            OutputParser::Plain => self.aider_line(line.trim()),
            OutputParser::Json => {}
        }
    }

    /// One event. `type: result` carries totals (they replace what was summed); any other event's
    /// usage and `cost_usd` are per step and add up. Shapes: claude stream-json and json, codex
    /// `exec --json`, and the plain `{usage, cost_usd, text}` of simpler tools.
    fn json(&mut self, value: &Value) {
        let is_result = value.get("type").and_then(Value::as_str) == Some("result");
        let usage = ["/usage", "/message/usage", "/info/total_token_usage"]
            .iter()
            .find_map(|p| value.pointer(p).and_then(usage_of));
        if let Some(usage) = usage {
            self.usage = Some(match (is_result, self.usage) {
                (false, Some(sum)) => TokenUsage {
                    input_tokens: sum.input_tokens.saturating_add(usage.input_tokens),
                    output_tokens: sum.output_tokens.saturating_add(usage.output_tokens),
                },
                _ => usage,
            });
        }
        if let Some(total) = value.get("total_cost_usd").and_then(Value::as_f64) {
            self.cost = Some(Usd::from_dollars(total));
        } else if let Some(step) = value.get("cost_usd").and_then(Value::as_f64) {
            let step = Usd::from_dollars(step);
            self.cost = Some(match (is_result, self.cost) {
                (false, Some(sum)) => Usd {
                    micros: sum.micros.saturating_add(step.micros),
                },
                _ => step,
            });
        }
        if is_result && let Some(text) = value.get("result").and_then(Value::as_str) {
            self.result_text = Some(text.to_owned());
        } else if let Some(text) = text_of(value) {
            self.last_text = text;
        }
    }

    /// aider: `Tokens: 2.1k sent, 150 received. Cost: $0.01 message, $0.05 session.`
    fn aider_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("Tokens:") else {
            return;
        };
        let words: Vec<&str> = rest
            .split([' ', ','])
            .map(|w| w.trim_end_matches('.'))
            .filter(|w| !w.is_empty())
            .collect();
        let before = |label: &str| {
            words
                .windows(2)
                .find(|w| w[1] == label)
                .and_then(|w| count(w[0]))
        };
        if let (Some(sent), Some(received)) = (before("sent"), before("received")) {
            let sum = self.usage.unwrap_or_default();
            self.usage = Some(TokenUsage {
                input_tokens: sum.input_tokens.saturating_add(sent),
                output_tokens: sum.output_tokens.saturating_add(received),
            });
        }
        // "$0.05 session": the session's total so far.
        if let Some(at) = rest.find(" session")
            && let Some(dollar) = rest[..at].rfind('$')
            && let Ok(session) = rest[dollar + 1..at].trim().parse::<f64>()
        {
            self.cost = Some(Usd::from_dollars(session));
        }
    }
}

fn usage_of(value: &Value) -> Option<TokenUsage> {
    let field = |name: &str| value.get(name).and_then(Value::as_u64).unwrap_or(0);
    let input = field("input_tokens")
        .saturating_add(field("cache_creation_input_tokens"))
        .saturating_add(field("cache_read_input_tokens"));
    let output = field("output_tokens");
    (value.get("input_tokens").is_some() || value.get("output_tokens").is_some()).then_some(
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
        },
    )
}

/// Assistant text: claude's `message.content[].text`, codex's `item.text` of an
/// `agent_message`, or a top-level `text`.
fn text_of(value: &Value) -> Option<String> {
    if let Some(content) = value.pointer("/message/content").and_then(Value::as_array) {
        let text: Vec<&str> = content
            .iter()
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect();
        return (!text.is_empty()).then(|| text.join("\n"));
    }
    if value.pointer("/item/type").and_then(Value::as_str) == Some("agent_message") {
        return value
            .pointer("/item/text")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    value.get("text").and_then(Value::as_str).map(str::to_owned)
}

/// `12`, `2.1k`, `1.5M` as a count.
fn count(word: &str) -> Option<u64> {
    let (number, scale) = match word.chars().last()? {
        'k' | 'K' => (&word[..word.len() - 1], 1_000.0),
        'm' | 'M' => (&word[..word.len() - 1], 1_000_000.0),
        _ => (word, 1.0),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * scale).round() as u64)
}

/// The last `max` bytes of `text`, cut on a character boundary.
fn tail(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(kind: OutputParser, chunks: &[&str]) -> (String, Option<TokenUsage>, Option<Usd>) {
        let mut parser = Parser::new(kind);
        for chunk in chunks {
            parser.feed(chunk.as_bytes());
        }
        parser.finish()
    }

    #[test]
    fn jsonl_steps_add_up_and_a_result_sets_totals() {
        let (text, usage, cost) = parse(
            OutputParser::Jsonl,
            &[
                "{\"type\":\"usage\",\"usage\":{\"input_tokens\":10,\"output_tokens\":5},\"cost_usd\":0.01}\n{\"type\":\"assis",
                "tant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}}\nnot json\n",
                "{\"type\":\"usage\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2},\"cost_usd\":0.02}",
            ],
        );
        assert_eq!(text, "hi");
        assert_eq!(
            usage,
            Some(TokenUsage {
                input_tokens: 11,
                output_tokens: 7
            })
        );
        assert_eq!(cost, Some(Usd::from_dollars(0.03)));
        let (text, usage, cost) = parse(
            OutputParser::Jsonl,
            &[
                "{\"type\":\"usage\",\"usage\":{\"input_tokens\":10,\"output_tokens\":5}}\n",
                "{\"type\":\"result\",\"result\":\"done\",\"total_cost_usd\":0.5,\"usage\":{\"input_tokens\":100,\"cache_read_input_tokens\":20,\"output_tokens\":50}}\n",
            ],
        );
        assert_eq!(text, "done");
        assert_eq!(usage.unwrap().input_tokens, 120);
        assert_eq!(cost, Some(Usd::from_dollars(0.5)));
    }

    #[test]
    fn codex_events_are_understood() {
        let (text, usage, _) = parse(
            OutputParser::Jsonl,
            &[
                "{\"type\":\"item.completed\",\"item\":{\"type\":\"agent_message\",\"text\":\"patched\"}}\n",
                "{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":7,\"cached_input_tokens\":3,\"output_tokens\":4}}\n",
            ],
        );
        assert_eq!(text, "patched");
        assert_eq!(usage.unwrap().total(), 11);
    }

    #[test]
    fn json_is_one_document_at_the_end() {
        let doc = "{\"type\":\"result\",\"result\":\"ok\",\"total_cost_usd\":0.25,\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}";
        let (text, usage, cost) = parse(OutputParser::Json, &[&doc[..10], &doc[10..]]);
        assert_eq!(text, "ok");
        assert_eq!(usage.unwrap().total(), 7);
        assert_eq!(cost.unwrap().micros, 250_000);
        let (text, usage, _) = parse(OutputParser::Json, &["not json"]);
        assert_eq!((text.as_str(), usage), ("", None));
    }

    #[test]
    fn aider_plain_text_reports_tokens_and_session_cost() {
        let (text, usage, cost) = parse(
            OutputParser::Plain,
            &[
                "Applied edit to x.py\nTokens: 2.1k sent, 150 received. Cost: $0.01 message, $0.05 session.\n",
                "Tokens: 1k sent, 50 received. Cost: $0.02 message, $0.07 session.\n",
            ],
        );
        assert!(text.starts_with("Applied edit"));
        assert_eq!(
            usage,
            Some(TokenUsage {
                input_tokens: 3100,
                output_tokens: 200
            })
        );
        assert_eq!(cost, Some(Usd::from_dollars(0.07)));
    }

    #[test]
    fn the_final_text_is_capped_at_its_tail() {
        let long = format!("{}é{}", "a".repeat(MAX_FINAL_TEXT_BYTES), "z");
        let (text, _, _) = parse(OutputParser::Plain, &[&long]);
        assert!(text.len() <= MAX_FINAL_TEXT_BYTES && text.ends_with("éz"));
    }
}
