//! A WASIp2 `wasi:http/incoming-handler` component, so the tests prove the host serves p2
//! components beside spin-sdk 7's p3 ones. It echoes its build variant, the method and the path.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        // A second build with SCORIA_TEST_VARIANT set answers differently, for swap tests.
        let variant = option_env!("SCORIA_TEST_VARIANT").unwrap_or("v1");
        let text = format!(
            "hello from p2 ({variant}): {:?} {}\n",
            request.method(),
            request.path_with_query().unwrap_or_default()
        );
        let response = OutgoingResponse::new(Fields::new());
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(text.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasi::http::proxy::export!(Hello);
