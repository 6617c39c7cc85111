//! A raw sign-in as a client behind nginx: a wrong password, a chosen `X-Real-IP`, and
//! the status and `Retry-After` of the answer. For the sign-in limit and flood tests.

/// Status and `Retry-After` of a sign-in with a wrong password for `email`, sent as
/// if nginx had seen `client_address`.
pub async fn sign_in_status(
    client: &reqwest::Client,
    node_url: &str,
    email: &str,
    client_address: &str,
) -> (u16, Option<String>) {
    let response = client
        .post(format!("{node_url}/auth/sign-in"))
        .header("X-Real-IP", client_address)
        .json(&serde_json::json!({ "email": email, "password": "wrong password" }))
        .send()
        .await
        .expect("every sign-in gets an answer");
    (response.status().as_u16(), retry_after(&response))
}

/// The answer's `Retry-After` header.
pub fn retry_after(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}
