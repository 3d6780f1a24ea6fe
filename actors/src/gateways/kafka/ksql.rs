//! ksqlDB statements: the ksql guard first, then `/ksql`, or `/query` for pull queries.

use super::*;

impl Handler<ExecuteKsql> for KafkaGateway {
    type Result = ResponseFuture<Result<Value>>;

    fn handle(&mut self, request: ExecuteKsql, _: &mut Self::Context) -> Self::Result {
        let Some(endpoint) = self.backend.ksqldb.clone() else {
            return Box::pin(ready(Err(Error::KsqlNotConfigured)));
        };
        let guarded = match guard_ksql_statement(&self.plugin, &request.statement, &self.grants) {
            Ok(guarded) => guarded,
            Err(error) => {
                // A refused statement can be up to any size; the log keeps its start.
                let statement = shortened(&request.statement, MAX_LOGGED_KSQL_BYTES);
                tracing::warn!(plugin = %self.plugin, statement, %error, "ksql statement refused");
                metrics::counter!("warden_ksql_denied_total", "plugin" => self.plugin.clone())
                    .increment(1);
                return Box::pin(ready(Err(error)));
            }
        };
        tracing::debug!(
            plugin = %self.plugin,
            kind = guarded.kind.as_str(),
            statement = %guarded.statement,
            "forwarding ksql statement"
        );
        Box::pin(async move { endpoint.execute(guarded).await })
    }
}

impl KsqlEndpoint {
    /// Posts one checked and rewritten statement to ksqlDB: pull queries to `/query`, which
    /// answers them once, everything else to `/ksql`.
    async fn execute(&self, guarded: GuardedKsql) -> Result<Value> {
        let url = if guarded.kind.is_query() {
            &self.queries_url
        } else {
            &self.statements_url
        };
        let statement = guarded.statement;
        let response = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, KSQL_MEDIA_TYPE)
            .json(&json!({ "ksql": statement, "streamsProperties": {} }))
            .send()
            .await
            .map_err(ksql_error)?;
        let status = response.status();
        let body = response.text().await.map_err(ksql_error)?;
        let parsed = serde_json::from_str::<Value>(&body);
        if !status.is_success() {
            // ksqlDB explains a refused statement in the `message` field of a JSON body.
            let reason = parsed
                .ok()
                .and_then(|value| value.get("message")?.as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(ksql_error(format!("HTTP {status}: {reason}")));
        }
        parsed.map_err(|error| ksql_error(format!("the response is not JSON: {error}")))
    }
}

fn ksql_error(error: impl Display) -> Error {
    Error::Backend {
        service: "ksqldb".to_string(),
        message: error.to_string(),
    }
}
