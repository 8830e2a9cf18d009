use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shared::app::main(k8s_worker::SERVICE_NAME, k8s_worker::build).await
}
