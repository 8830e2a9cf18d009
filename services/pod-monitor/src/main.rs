use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shared::app::main(pod_monitor::SERVICE_NAME, pod_monitor::build).await
}
