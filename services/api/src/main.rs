use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // `api --openapi` prints the OpenAPI document and exits: no config, no infrastructure.
    if std::env::args().nth(1).as_deref() == Some("--openapi") {
        println!("{}", api::openapi::document_json());
        return ExitCode::SUCCESS;
    }
    shared::app::main(api::SERVICE_NAME, api::build).await
}
