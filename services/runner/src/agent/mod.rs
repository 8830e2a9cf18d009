//! Agent runs: the runner follows the agent's stdout while it runs (usage, cost, budget) and
//! reports its final text and the workspace's changes when it has ended.

mod parse;
mod workspace;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use kiln_runner_protocol::StatePaths;
use kiln_runner_protocol::agent::{AgentReport, AgentWatch};

use parse::Parser;
use workspace::Snapshot;

/// Follows one agent run.
#[derive(Debug)]
pub(crate) struct Watcher {
    watch: AgentWatch,
    parser: Parser,
    before: Snapshot,
    /// stdout.log, read from where the last poll stopped.
    log: Option<File>,
    exceeded: Option<String>,
}

impl Watcher {
    /// Snapshots the workspace; call before the agent starts.
    pub(crate) fn start(watch: &AgentWatch, workspace: &Path) -> Watcher {
        Watcher {
            parser: Parser::new(watch.parser),
            watch: watch.clone(),
            before: Snapshot::take(workspace),
            log: None,
            exceeded: None,
        }
    }

    /// Reads what the agent printed since the last call; `Some(why)` once its budget is spent.
    pub(crate) fn poll(&mut self, paths: &StatePaths) -> Option<String> {
        if self.log.is_none() {
            self.log = File::open(paths.stdout()).ok();
        }
        if let Some(log) = self.log.as_mut() {
            let mut fresh = Vec::new();
            if log.read_to_end(&mut fresh).is_ok() && !fresh.is_empty() {
                self.parser.feed(&fresh);
            }
        }
        if self.exceeded.is_none() {
            self.exceeded = self.over_budget();
        }
        self.exceeded.clone()
    }

    fn over_budget(&self) -> Option<String> {
        if let (Some(max), Some(usage)) = (self.watch.max_tokens, self.parser.usage())
            && usage.total() > max
        {
            return Some(format!(
                "token budget exceeded: {} used, max_tokens {max}",
                usage.total()
            ));
        }
        if let (Some(max), Some(cost)) = (self.watch.max_cost, self.parser.cost())
            && cost > max
        {
            return Some(format!("cost budget exceeded: {cost} spent, max {max}"));
        }
        None
    }

    /// The report, once the agent and everything it started have ended.
    pub(crate) fn finish(mut self, paths: &StatePaths, workspace: &Path) -> AgentReport {
        self.poll(paths);
        let exceeded = self.exceeded.clone();
        let (changed_files, changed_files_truncated) =
            workspace::changes(&self.before, workspace, &self.watch);
        let (final_text, usage, cost_usd) = self.parser.finish();
        AgentReport {
            final_text,
            usage,
            cost_usd,
            changed_files,
            changed_files_truncated,
            budget_exceeded: exceeded,
        }
    }
}
