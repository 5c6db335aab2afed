"""One chat completion with the official OpenAI Python SDK, for the end-to-end tests.

    python openai_chat.py SPEC

SPEC is a JSON object: base_url, model, messages, stream, and optionally headers (sent with
every request), stream_options, api_key (default "test-key"), max_retries (default 0, so
that a test counts the requests the client really made) and timeout (seconds, default 20).

Prints one JSON line per thing received, flushed at once so that a test reads them live:
{"chunk": ...} per streamed chunk, or {"completion": ...}, then {"done": true}; on an error
{"error": CLASS, "status": HTTP status or null, "message": ...} and exit status 1.
"""

import json
import sys

import openai


def emit(report):
    print(json.dumps(report), flush=True)


def main():
    spec = json.loads(sys.argv[1])
    client = openai.OpenAI(
        base_url=spec["base_url"],
        api_key=spec.get("api_key", "test-key"),
        max_retries=spec.get("max_retries", 0),
        timeout=spec.get("timeout", 20),
    )
    request = {
        "model": spec["model"],
        "messages": spec["messages"],
        "stream": spec["stream"],
        "extra_headers": spec.get("headers"),
    }
    if "stream_options" in spec:
        request["stream_options"] = spec["stream_options"]
    try:
        answer = client.chat.completions.create(**request)
        if spec["stream"]:
            for chunk in answer:
                emit({"chunk": chunk.model_dump(mode="json", exclude_unset=True)})
        else:
            emit({"completion": answer.model_dump(mode="json", exclude_unset=True)})
    except openai.APIStatusError as error:
        emit({"error": type(error).__name__, "status": error.status_code, "message": str(error)})
        sys.exit(1)
    except Exception as error:  # a broken stream, a refused connection: reported, not raised
        message = str(error)
        if error.__cause__ is not None:
            message += f" ({type(error.__cause__).__name__}: {error.__cause__})"
        emit({"error": type(error).__name__, "status": None, "message": message})
        sys.exit(1)
    emit({"done": True})


main()
