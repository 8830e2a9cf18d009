use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shared::app::main(saga_orchestrator::SERVICE_NAME, saga_orchestrator::build).await
}
