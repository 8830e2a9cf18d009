use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shared::app::main(dlq_processor::SERVICE_NAME, dlq_processor::build).await
}
