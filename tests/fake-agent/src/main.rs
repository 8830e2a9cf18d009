//! `kiln-fake-agent --model M PROMPT`: a coding agent CLI stand-in for tests (real LLM APIs are
//! unreachable there). The prompt is a script, one command per line or `;`-separated:
//!
//! | command | effect |
//! |---|---|
//! | `say TEXT` | prints an assistant message; the last one is the final text |
//! | `write PATH TEXT` | creates or replaces a file (`\n` in TEXT is a newline) |
//! | `delete PATH` | removes a file |
//! | `sleep SECONDS` | waits |
//! | `usage IN OUT COST` | reports tokens and dollars spent by this step |
//! | `flood LINES` | prints that many lines |
//! | `env NAME` | says whether NAME is set (never its value) |
//! | `net` | says whether a TCP connection to 1.1.1.1:53 succeeds |
//! | `fail CODE` | exits with CODE at once |
//!
//! Output is JSON lines like `claude --output-format stream-json`: `{"type":"assistant",...}`,
//! `{"type":"usage",...}`, and a closing `{"type":"result","result":...}`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut model = String::from("fake");
    let mut prompt = None;
    while let Some(arg) = args.next() {
        if arg == "--model" {
            model = args.next().unwrap_or_default();
        } else {
            prompt = Some(arg);
        }
    }
    let Some(prompt) = prompt else {
        eprintln!("usage: kiln-fake-agent [--model M] PROMPT");
        return ExitCode::from(2);
    };
    emit(&json!({"type": "system", "subtype": "init", "model": model}));
    let mut last = String::new();
    for line in prompt
        .split(['\n', ';'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match run(command, rest, &mut last) {
            Ok(Some(code)) => return ExitCode::from(code),
            Ok(None) => {}
            Err(error) => {
                eprintln!("fake-agent: {line}: {error}");
                return ExitCode::from(3);
            }
        }
    }
    emit(&json!({"type": "result", "subtype": "success", "result": last}));
    ExitCode::SUCCESS
}

/// Runs one command; `Some(code)` ends the agent with that code.
fn run(command: &str, rest: &str, last: &mut String) -> Result<Option<u8>, String> {
    match command {
        "say" => {
            emit(
                &json!({"type": "assistant", "message": {"content": [{"type": "text", "text": rest}]}}),
            );
            rest.clone_into(last);
        }
        "write" => {
            let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let path = std::path::Path::new(path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(path, text.replace("\\n", "\n")).map_err(|e| e.to_string())?;
            emit(&json!({"type": "tool", "name": "write", "path": path}));
        }
        "delete" => {
            std::fs::remove_file(rest).map_err(|e| e.to_string())?;
            emit(&json!({"type": "tool", "name": "delete", "path": rest}));
        }
        "sleep" => {
            let seconds: f64 = rest.parse().map_err(|_| "sleep SECONDS".to_owned())?;
            std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
        }
        "usage" => {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let [input, output, cost] = parts.as_slice() else {
                return Err("usage IN OUT COST".into());
            };
            let number = |s: &str| {
                s.parse::<f64>()
                    .map_err(|_| format!("{s:?} is not a number"))
            };
            emit(&json!({
                "type": "usage",
                "usage": {"input_tokens": number(input)? as u64, "output_tokens": number(output)? as u64},
                "cost_usd": number(cost)?,
            }));
        }
        "flood" => {
            let lines: u64 = rest.parse().map_err(|_| "flood LINES".to_owned())?;
            let mut out = std::io::stdout().lock();
            for i in 0..lines {
                if writeln!(out, "{{\"type\":\"flood\",\"line\":{i}}}").is_err() {
                    break; // the reader is gone
                }
            }
        }
        "env" => {
            let state = if std::env::var_os(rest).is_some() {
                "set"
            } else {
                "unset"
            };
            emit(
                &json!({"type": "assistant", "message": {"content": [{"type": "text", "text": format!("{rest} is {state}")}]}}),
            );
            *last = format!("{rest} is {state}");
        }
        "net" => {
            let address = std::net::SocketAddr::from(([1, 1, 1, 1], 53));
            let state = match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
            {
                Ok(_) => "reachable",
                Err(_) => "unreachable",
            };
            *last = format!("network {state}");
            emit(
                &json!({"type": "assistant", "message": {"content": [{"type": "text", "text": last}]}}),
            );
        }
        "fail" => {
            let code: u8 = rest.parse().unwrap_or(1);
            eprintln!("fake-agent: failing with {code} as asked");
            return Ok(Some(code));
        }
        other => return Err(format!("unknown command {other:?}")),
    }
    Ok(None)
}

fn emit(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // Unbuffered per line, so the runner sees progress as it happens.
    if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
        std::process::exit(141);
    }
}
