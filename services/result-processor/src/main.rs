use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shared::app::main(result_processor::SERVICE_NAME, result_processor::build).await
}
