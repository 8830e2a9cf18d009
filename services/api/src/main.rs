use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shared::app::main(api::SERVICE_NAME, api::build).await
}
