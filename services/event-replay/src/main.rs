use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shared::app::main(event_replay::SERVICE_NAME, event_replay::build).await
}
