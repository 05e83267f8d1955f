"""The OpenAPI 3 description of the REST API, served at /openapi.json."""


def _envelope(data_schema: dict | None = None, **extra) -> dict:
    properties = {
        "status": {"type": "string", "enum": ["OK", "KO"]},
        "error": {"type": ["string", "null"]},
        "description": {"type": "string"},
        "data": data_schema or {},
        "date": {"type": "string"},
        **extra,
    }
    return {"type": "object", "required": ["response"], "properties": {"response": {
        "type": "object", "required": ["status", "error", "description", "data", "date"], "properties": properties}}}


def _answer(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema or {"$ref": "#/components/schemas/Envelope"}}}}


# A person's name as the service takes it (datastructure/names.py): not blank, not the
# reserved "unknown", no slash, no control or invisible formatting character, at most 100.
NAME_CHAR = r"[^/\\\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\uf8ff]"
NAME_PATTERN = (r"^(?!\s*[Uu][Nn][Kk][Nn][Oo][Ww][Nn]\s*$)(?=.*\S)" + NAME_CHAR + "{1,100}$")
PERSON_NAME = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": NAME_PATTERN}


def _errors(*codes: int) -> dict:
    return {str(code): _answer("error envelope") for code in codes}


def _upload(description: str) -> dict:
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {"file": {**BINARY, "description": description}}}}}}


def _page(summary: str, operation_id: str, *, parameters: list = (), errors=()) -> dict:
    """A page a browser opens at the same path as an API operation (GET: the HTML page)."""
    html = {"text/html": {"schema": {"type": "string"}}}
    return {"summary": summary, "operationId": operation_id, "tags": ["Pages"], **({"parameters": list(parameters)} if parameters else {}),
            "responses": {"200": {"description": "the page", "content": html},
                          **{str(code): {"description": "the error, in words", "content": html} for code in errors}}}


FACE = {"type": "object", "required": ["name", "confidence", "box"],
        "description": "distance, candidate, runner_up and runner_up_distance only for the API token or the admin login",
        "properties": {
            "name": {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "distance": {"type": "number"}, "candidate": {"type": "string"},
            "runner_up": {"type": ["string", "null"]}, "runner_up_distance": {"type": ["number", "null"]},
            "box": {"type": "object",
                    "properties": {side: {"type": "integer"} for side in ("top", "right", "bottom", "left")}}}}
ANNOTATED = {"type": "object", "required": ["saved"], "description": "whether the annotated copy was written, and why not",
             "properties": {"saved": {"type": "boolean"}, "reason": {"type": "string"}}}
MODEL_ID = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^\d{8}_\d{6}(_[1-9]\d{0,5})?$"}}
NAME = {"name": "name", "in": "path", "required": True, "description": "a person's name (any case)",
        "schema": PERSON_NAME}
PHOTO_ID = {"name": "photo_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}
RANGE = {"type": "object", "properties": {"start": {"type": "number"}, "end": {"type": "number"}}}
TIMELINE_ENTRY = {"type": "object", "properties": {
    "name": {"type": "string", "description": "a person, or \"unknown N\" for the N-th distinct unknown face"},
    "known": {"type": "boolean"}, "ranges": {"type": "array", "items": RANGE, "description": "seconds from the first frame"},
    "frames": {"type": "integer"}, "samples": {"type": "integer"},
    "confidence": {"type": "number", "minimum": 0, "maximum": 1}, "best_time": {"type": "number"},
    "thumbnail": {"type": ["string", "null"]}, "thumbnail_url": {"type": ["string", "null"]}, "tracks": {"type": "integer"}}}
VIDEO_RESULT = {"type": "object", "properties": {
    "people": {"type": "object", "additionalProperties": {"type": "number"}},
    "timeline": {"type": "array", "items": TIMELINE_ENTRY},
    "video": {"type": "object", "properties": {key: {"type": kind} for key, kind in (
        ("container", "string"), ("codec", "string"), ("width", "integer"), ("height", "integer"), ("fps", "number"),
        ("frames", "integer"), ("seconds", "number"), ("offset", "number"))}},
    "samples": {"type": "integer"}, "encodings": {"type": "integer"}, "model": {"type": "string"}}}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
JOB_QUERY = {"name": "job", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "a job to follow (the page says so when there is no such job)"}


# A file part: required wherever it appears, and never empty (an empty part is MISSING_FILE).
BINARY = {"type": "string", "format": "binary", "minLength": 1}
# CompreFace's JSON alternative to a file part: the photo in base64
BASE64 = {"type": "string", "contentEncoding": "base64", "description": "the photo, base64",
          "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$"}
# Each dialect's own answer shapes (api/deepstack.py, api/compreface.py): what their clients parse.
DEEPSTACK_ANSWER = {"type": "object", "required": ["success"], "properties": {
    "success": {"type": "boolean"}, "error": {"type": "string"}, "duration": {"type": "number"}}}
DEEPSTACK_ERROR = {"type": "object", "required": ["success", "error"], "properties": {
    "success": {"const": False}, "error": {"type": "string", "minLength": 1}, "duration": {"type": "number"}}}
COMPREFACE_ERROR = {"type": "object", "required": ["message", "code"], "additionalProperties": False, "properties": {
    "message": {"type": "string"}, "code": {"type": "integer"}}}


def _dialect(summary: str, tag: str, *, fields: tuple = (), form: dict | None = None, query: tuple = (),
             json_body: dict | None = None, path: dict | None = None, answer: str = "the dialect's JSON answer",
             errors=(400, 401, 413, 429), required: tuple = (), success: str = "200") -> dict:
    """One operation of the DeepStack or CompreFace dialect (their own answer and error shapes).

    ``fields`` are file fields, each required and non-empty; ``required`` names the other form
    fields or query parameters the operation refuses to go without; ``query`` items are
    (name, type) or (name, schema)."""
    deepstack = tag == "DeepStack"
    error = {"$ref": "#/components/schemas/DeepStackError" if deepstack else "#/components/schemas/CompreFaceError"}
    operation = {"summary": summary, "tags": [tag],
                 "responses": {success: {"description": answer, "content": {"application/json": {
                                   "schema": {"$ref": "#/components/schemas/DeepStackAnswer"} if deepstack else {}}}},
                               **{str(code): {"description": f"{tag} error", "content": {"application/json": {
                                   "schema": error}}} for code in errors}}}
    properties = {name: BINARY for name in fields}
    properties.update(form or {})
    content = {}
    if properties:
        needed = [*fields, *(name for name in required if name in properties)]
        content["multipart/form-data"] = {"schema": {"type": "object", "properties": properties,
                                                     **({"required": needed} if needed else {})}}
    if json_body:
        content["application/json"] = {"schema": json_body}
    if content:
        operation["requestBody"] = {"required": bool(fields or json_body or set(required) & set(properties)),
                                    "content": content}
    parameters = ([path] if path else []) + [
        {"name": name, "in": "query", "required": name in required,
         "schema": {"type": kind} if isinstance(kind, str) else kind} for name, kind in query]
    if parameters:
        operation["parameters"] = parameters
    return operation


DEEPSTACK_KEY = {"api_key": {"type": "string", "description": "the API token"}}
USERID = {"userid": {**PERSON_NAME, "description": "the person's name"}}
COUNT = {"type": "integer", "minimum": 0}
FACE_QUERY = (("limit", COUNT), ("det_prob_threshold", {"type": "number", "minimum": 0, "maximum": 1}),
              ("face_plugins", "string"), ("status", "boolean"))
SUBJECT_NAME = {**PERSON_NAME, "description": "a person's name"}
SUBJECT = {"name": "subject", "in": "path", "required": True, "schema": {"type": "string"}}
# "delete" is never an image id: POST /api/v1/recognition/faces/delete is its own operation
IMAGE_ID = {"name": "image_id", "in": "path", "required": True, "schema": {"type": "string", "not": {"const": "delete"}}}


def compat_paths() -> dict:
    """The DeepStack / CodeProject.AI (api/deepstack.py) and CompreFace (api/compreface.py) endpoints."""
    ds, cf = "DeepStack", "CompreFace"
    base64_file = {"type": "object", "required": ["file"], "properties": {"file": BASE64}}
    subject_body = {"type": "object", "required": ["subject"], "properties": {"subject": SUBJECT_NAME}}
    return {
        "/v1/vision/face": {"post": _dialect("Detect faces (boxes)", ds, fields=("image",), form=DEEPSTACK_KEY)},
        "/v1/vision/face/recognize": {"post": _dialect(
            "Recognise faces: userid (or unknown) and calibrated confidence", ds, fields=("image",),
            form={**DEEPSTACK_KEY, "min_confidence": {"type": "number", "minimum": 0, "maximum": 1}})},
        "/v1/vision/face/register": {"post": _dialect(
            "Enrol photos (image, image1...) of userid", ds, fields=("image",), form={**DEEPSTACK_KEY, **USERID},
            required=("userid",), errors=(400, 401, 409, 413, 429))},
        # no body to describe: the key comes as the form field api_key (DeepStack clients) or the
        # bearer header, and a body of anything else is ignored
        "/v1/vision/face/list": {"post": _dialect("The enrolled names (the key as the form field api_key, or bearer)", ds)},
        "/v1/vision/face/delete": {"post": _dialect("Remove userid", ds, form={**DEEPSTACK_KEY, **USERID},
                                                    required=("userid",))},
        "/v1/vision/face/match": {"post": _dialect("Similarity of the main faces of image1 and image2", ds,
                                                   fields=("image1", "image2"), form=DEEPSTACK_KEY)},
        "/api/v1/recognition/recognize": {"post": _dialect(
            "Recognise faces: subjects with similarity (calibrated confidence); a face left unknown has "
            "its nearest subject at similarity 0 for the token, no subject for anonymous callers", cf, fields=("file",),
            json_body=base64_file, query=FACE_QUERY + (("prediction_count", COUNT),))},
        "/api/v1/recognition/faces": {
            "post": _dialect("Add an example of ?subject= (a photo the subject has: its image_id again)", cf,
                             fields=("file",), json_body=base64_file,
                             query=(("subject", SUBJECT_NAME), FACE_QUERY[1]), required=("subject",),
                             answer="image_id, subject", errors=(400, 401, 409, 413, 429), success="201"),
            "get": _dialect("List examples (page, size, subject)", cf,
                            query=(("page", COUNT), ("size", {"type": "integer", "minimum": 1}), ("subject", "string"))),
            "delete": _dialect("Delete the examples of ?subject= (all without it)", cf, query=(("subject", "string"),))},
        "/api/v1/recognition/faces/{image_id}": {"delete": _dialect("Delete one example", cf, path=IMAGE_ID,
                                                                    errors=(401, 404, 405))},
        "/api/v1/recognition/faces/{image_id}/verify": {"post": _dialect(
            "Similarity of every face of a photo to the example image_id", cf, fields=("file",), json_body=base64_file,
            query=FACE_QUERY, path=IMAGE_ID, errors=(400, 401, 404, 413, 429))},
        "/api/v1/recognition/faces/delete": {"post": _dialect(
            "Delete the examples of a JSON list of image ids", cf, json_body={"type": "array", "items": {"type": "string"}})},
        "/api/v1/recognition/subjects": {
            "get": _dialect("List subjects", cf), "delete": _dialect("Delete every subject", cf),
            "post": _dialect("Accept a subject name (listed from its first example)", cf, json_body=subject_body,
                             success="201")},
        "/api/v1/recognition/subjects/{subject}": {
            "put": _dialect("Rename a subject", cf, json_body=subject_body, path=SUBJECT, errors=(400, 401, 404, 409)),
            "delete": _dialect("Delete a subject and its examples", cf, path=SUBJECT, errors=(401, 404, 409))},
        "/api/v1/detection/detect": {"post": _dialect("Detect faces", cf, fields=("file",), json_body=base64_file,
                                                      query=FACE_QUERY)},
        "/api/v1/verification/verify": {"post": _dialect(
            "Similarity of the source's main face to every target face", cf, fields=("source_image", "target_image"),
            json_body={"type": "object", "required": ["source_image", "target_image"],
                       "properties": {"source_image": BASE64, "target_image": BASE64}},
            query=FACE_QUERY)},
    }


CAMERA_NAME = {"name": "name", "in": "path", "required": True, "description": "a camera's name",
               "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"}}
CAMERA_STATUS = {"type": "object", "description": "the supervisor's view of a camera", "properties": {
    "state": {"type": "string", "description": "streaming, reconnecting, connecting, disabled, or error: <reason>"},
    "fps": {"type": "number", "description": "frames looked at per second"},
    "dropped": {"type": "integer", "description": "sampled frames skipped because the camera fell behind"}}}
CAMERA = {"type": "object", "properties": {
    "name": {"type": "string"}, "url": {"type": "string", "description": "without its credentials"},
    "sample_fps": {"type": "number"}, "min_face_px": {"type": "integer"}, "enabled": {"type": "boolean"},
    "defined_in": {"type": "string", "enum": ["config", "api"]}, "status": CAMERA_STATUS,
    "snapshot_url": {"type": "string"}}}
CAMERA_BODY = {"type": "object", "additionalProperties": False, "properties": {
    "name": CAMERA_NAME["schema"],
    "url": {"type": "string", "pattern": "^(rtsps?|https?|file)://[^\\s\\x00-\\x1f\\x7f]+$",
            "description": "rtsp://, rtsps://, http(s):// MJPEG; file:// where cameras.allow_files"},
    "sample_fps": {"type": "number", "minimum": 0.1, "maximum": 30},
    "min_face_px": {"type": "integer", "minimum": 0, "maximum": 4096},
    "enabled": {"type": "boolean"}}}


def camera_paths() -> dict:
    """The cameras (api/cameras.py): definitions, snapshots, crops, and the events stream."""
    jpeg = {"description": "JPEG", "content": {"image/jpeg": {}}}
    # a camera keeps its name: a change names any of the other fields
    changes = {**CAMERA_BODY, "properties": {key: value for key, value in CAMERA_BODY["properties"].items() if key != "name"}}
    json_body = {"required": True, "content": {"application/json": {"schema": changes}}}
    return {
        "/cameras": {
            "get": {"summary": "Every camera with its state, fps and dropped frames", "operationId": "cameras",
                    "responses": {"200": _answer("cameras", _envelope({"type": "array", "items": CAMERA})), **_errors(401)}},
            "post": {"summary": "Add a camera: watched within seconds, no restart", "operationId": "addCamera",
                     "requestBody": {**json_body, "content": {"application/json": {"schema": {
                         **CAMERA_BODY, "required": ["name", "url"]}}}},
                     "responses": {"201": _answer("the camera", _envelope(CAMERA)), **_errors(401, 409, 422)}}},
        "/cameras/{name}": {
            "get": {"summary": "One camera and its state", "operationId": "camera", "parameters": [CAMERA_NAME],
                    "responses": {"200": _answer("the camera", _envelope(CAMERA)), **_errors(401, 404)}},
            "patch": {"summary": "Change a camera's url or settings", "operationId": "changeCamera",
                      "parameters": [CAMERA_NAME], "requestBody": json_body,
                      "responses": {"200": _answer("the camera", _envelope(CAMERA)), **_errors(401, 404, 409, 422)}},
            "delete": {"summary": "Stop watching a camera and remove it", "operationId": "removeCamera",
                       "parameters": [CAMERA_NAME], "responses": {"200": _answer("removed"), **_errors(401, 404, 409)}}},
        "/cameras/{name}/snapshot": {"get": {
            "summary": "The camera's last frame looked at, with a box and a name per face", "operationId": "cameraSnapshot",
            "parameters": [CAMERA_NAME], "responses": {"200": jpeg, **_errors(401, 404)}}},
        "/cameras/{name}/crops/{crop}": {"get": {
            "summary": "The face crop of an event (its crop_url), while kept", "operationId": "cameraCrop",
            "parameters": [CAMERA_NAME, {"name": "crop", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": jpeg, **_errors(401, 404)}}},
        "/events": {"get": {
            "summary": "Server-sent events: each camera event (new, update, end of a track) as `event: face`",
            "description": "`id` is the event's journal number (Last-Event-ID resumes after it); `data` the event JSON: "
                           "id, type, camera, source, track_id, name, unknown_id, confidence, box, time, crop_url, "
                           "face_id, frigate_event_id. A stream ends after cameras.sse_seconds; EventSource reconnects.",
            "operationId": "events",
            "parameters": [{"name": "recent", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 100},
                            "description": "start with the last N events"},
                           {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the stream", "content": {"text/event-stream": {}}},
                          **_errors(401, 503)}}},
    }


RECORD_ID = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}
CLUSTER_ID = {"name": "cluster", "in": "path", "required": True, "schema": {"type": "integer"}}
ACTION_ID = {"name": "action_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}
PAGING = [{"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 10**9}},
          {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}}]
# what inbox.when() reads: seconds since 1970, or an ISO 8601 date or time
SINCE = {"anyOf": [{"type": "string", "pattern": "^[0-9]{1,10}(\\.[0-9]{1,6})?$"},
                   {"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
NAME_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}}
QUALITY = {"type": ["object", "null"], "description": "utils/quality.py: width (px), sharpness (Laplacian variance), "
           "yaw (nose offset / eye distance), detector, score in [0, 1]",
           "properties": {"width": {"type": "integer"}, "sharpness": {"type": "number"}, "yaw": {"type": ["number", "null"]},
                          "detector": {"type": "string"}, "score": {"type": "number"}}}
FACE_RECORD = {"type": "object", "properties": {
    "id": {"type": "string"}, "time": {"type": "string"}, "state": {"type": "string", "enum": ["unknown", "named", "ignored"]},
    "name": {"type": "string"}, "cluster": {"type": ["integer", "null"]}, "photo": {"type": ["string", "null"]},
    "decision": {"type": "object", "description": "name, confidence, distance, candidate, runner_up, runner_up_distance"},
    "source": {"type": "object", "properties": {"route": {"type": "string"}, "client": {"type": "string"},
                                                "label": {"type": ["string", "null"]}, "file": {"type": ["string", "null"]}}},
    "model": {"type": ["string", "null"]}, "quality": QUALITY, "crop_url": {"type": "string"}}}
CLUSTER = {"type": "object", "properties": {
    "id": {"type": "integer"}, "size": {"type": "integer"}, "first_seen": {"type": "string"}, "last_seen": {"type": "string"},
    "sources": {"type": "object", "additionalProperties": {"type": "integer"}},
    "near": {"type": ["object", "null"], "description": "the person most faces sit near (a likely missed photo); null: a stranger"},
    "best": {"type": "array", "items": {"type": "string"}}, "faces": {"type": "array", "items": {"type": "string"}}}}
ACTION = {"description": "every action answers with its action id (POST /faces/undo/{action_id}) and the new model"}


def _action(summary: str, operation: str, parameters=(), body=None, errors=(401, 404, 409, 422)) -> dict:
    return {"post": {"summary": summary, "operationId": operation, "parameters": list(parameters),
                     **({"requestBody": body} if body else {}),
                     "responses": {"200": _answer("the action id and the new model", _envelope(
                         action={"type": "string"}, model={"type": "string"})), **_errors(*errors)}, **ACTION}}


def inbox_paths() -> dict:
    """The face inbox (api/faces.py): records, clusters and actions; token or admin login."""
    listing = {"type": "object", "properties": {"total": {"type": "integer"}, "offset": {"type": "integer"},
                                                "limit": {"type": "integer"}}}
    return {
        "/faces": {"get": {"summary": "Face records, newest first", "operationId": "faceRecords",
                           "parameters": [{"name": name, "in": "query", "schema": schema, "description": text}
                                          for name, schema, text in (
                               ("state", {"type": "string", "enum": ["unknown", "named", "ignored"]}, "a record's state"),
                               ("name", {"type": "string"}, "any case"),
                               ("since", SINCE, "seconds since 1970 or an ISO 8601 date"),
                               ("source", {"type": "string"}, "a camera or client label, a route, or a file name"),
                               ("cluster", {"type": "integer", "minimum": 0, "maximum": 2**62}, "the records of one cluster"))]
                           + PAGING,
                           "responses": {"200": _answer("one page", _envelope({**listing, "properties": {
                               **listing["properties"], "records": {"type": "array", "items": FACE_RECORD}}})),
                               **_errors(401, 404, 422)}}},
        "/faces/{record_id}": {"get": {"summary": "One face record", "operationId": "faceRecord", "parameters": [RECORD_ID],
                                       "responses": {"200": _answer("the record", _envelope(FACE_RECORD)), **_errors(401, 404)}}},
        "/faces/{record_id}/crop": {"get": {"summary": "A face record's crop", "operationId": "faceCrop",
                                            "parameters": [RECORD_ID], "responses": {
                                                "200": {"description": "JPEG", "content": {"image/jpeg": {}}}, **_errors(401, 404)}}},
        "/faces/clusters": {"get": {"summary": "Clusters of unknown faces, largest first", "operationId": "faceClusters",
                                    "parameters": [{"name": "state", "in": "query", "schema": {
                                        "type": "string", "enum": ["unknown", "ignored"]}}] + PAGING,
                                    "responses": {"200": _answer("one page", _envelope({**listing, "properties": {
                                        **listing["properties"], "clusters": {"type": "array", "items": CLUSTER}}})),
                                        **_errors(401, 422)}}},
        "/faces/clusters/{cluster}": {"get": {"summary": "One cluster", "operationId": "faceCluster", "parameters": [CLUSTER_ID],
                                              "responses": {"200": _answer("the cluster", _envelope(CLUSTER)), **_errors(401, 404)}}},
        "/faces/actions": {"get": {"summary": "The newest inbox actions", "operationId": "faceActions",
                                   "responses": {"200": _answer("actions"), **_errors(401)}}},
        "/faces/clusters/{cluster}/assign": _action("Enrol a cluster's faces as a person (quality gate, near-duplicates "
                                                    "thinned, at most inbox.max_assign)", "assignCluster", [CLUSTER_ID], NAME_BODY),
        "/faces/assign": _action("Enrol chosen face records as a person", "assignFaces", (), {
            "required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["name", "faces"],
                                                                          "properties": {"name": {"type": "string"},
                                                                                         "faces": {"type": "array", "minItems": 1, "items": {
                                                                                             "type": "string", "pattern": "^[0-9a-f]{16}$"}}}}}}}),
        "/faces/clusters/{cluster}/ignore": _action("A known stranger: the cluster's faces become negatives",
                                                    "ignoreCluster", [CLUSTER_ID], errors=(401, 404, 409)),
        "/faces/{record_id}/not": _action("Not this person: the face becomes a hard negative of the name",
                                          "notThisPerson", [RECORD_ID], NAME_BODY),
        "/people/{name}/negatives/{negative_id}": {"delete": {
            "summary": "Remove one of a person's negatives (a new model version)", "operationId": "removeNegative",
            "parameters": [NAME, {**RECORD_ID, "name": "negative_id"}],
            "responses": {"200": _answer("the action id and the new model"), **_errors(401, 404, 409, 422)}}},
        "/faces/undo/{action_id}": _action("Undo an action: the model before it is active again, records back",
                                           "undoAction", [ACTION_ID], errors=(401, 404, 409)),
        "/faces/recluster": {"post": {"summary": "Group every unknown face again (a background job)", "operationId": "recluster",
                                      "responses": {"202": _answer("the job"), **_errors(401, 409)}}},
        "/faces/recluster/{job_id}": {"get": {"summary": "A recluster job", "operationId": "reclusterJob",
                                              "parameters": [{**JOB_ID}], "responses": {"200": _answer("the job"),
                                                                                      **_errors(401, 404)}}},
    }


# How callers prove they hold the API token (Swagger UI's Authorize button offers each). A
# browser's admin login opens the same operations; DeepStack's form field api_key is a field
# of each DeepStack operation (OpenAPI has no scheme for a form field).
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "the API token (printed at first start, or "
                                                                  "PYRECOGNIZER_API_TOKEN)"},
    "compreface_key": {"type": "apiKey", "in": "header", "name": "x-api-key",
                       "description": "the API token, as CompreFace clients send it"},
}


# Who may call what (api/auth.py's decorators): the operations that need the token, and those
# that follow /predict's policy; the others (health, annotated copies) are open.
NEEDS_TOKEN = ("/train", "/tune", "/jobs", "/models", "/people", "/faces", "/cameras", "/events", "/v1/vision/face/register", "/v1/vision/face/list",
               "/v1/vision/face/delete", "/api/v1/recognition/faces", "/api/v1/recognition/subjects")
LIKE_PREDICT = ("/predict", "/", "/verify", "/encode", "/v1/vision/face", "/v1/vision/face/recognize",
                "/v1/vision/face/match", "/api/v1/recognition/recognize", "/api/v1/detection/detect",
                "/api/v1/verification/verify", "/api/v1/recognition/faces/{image_id}/verify")


def security_of(path: str) -> list | None:
    """The ``security`` of the operations of ``path`` (None: open to anyone)."""
    scheme = {"compreface_key": []} if path.startswith("/api/v1/") else {"bearer": []}
    if path in LIKE_PREDICT or path.startswith("/predict/video"):
        return [{}, scheme]
    if any(path == prefix or path.startswith(prefix + "/") for prefix in NEEDS_TOKEN):
        return [scheme]
    return None


def _error_schema(path: str) -> dict:
    return {"$ref": "#/components/schemas/" + ("CompreFaceError" if path.startswith("/api/v1/") else "DeepStackError")}


TAGS = (("/people", "People"), ("/train", "Models and training"), ("/tune", "Models and training"),
        ("/jobs", "Models and training"), ("/models", "Models and training"), ("/health", "Service"),
        ("/faces", "Inbox"), ("/cameras", "Cameras"), ("/events", "Cameras"))


def _secured(paths: dict) -> dict:
    """``paths`` with each operation's ``security`` (a page's GET keeps none: it is a page) and
    its tag (Swagger UI's groups; the REST API's by area, the dialects' their own)."""
    for path, operations in paths.items():
        security = security_of(path)
        tag = next((name for prefix, name in TAGS if path.startswith(prefix)), "Recognition")
        for operation in operations.values():
            operation.setdefault("tags", [tag])
            if security is not None and "security" not in operation and operation.get("tags") != ["Pages"]:
                operation["security"] = security
                # no token, or a wrong one (too many wrong ones from one address: 429), in the
                # operation's own error shape
                for status in ("401", "429"):
                    operation["responses"].setdefault(status, _answer("error envelope") if "/v1/" not in path else {
                        "description": "error", "content": {"application/json": {"schema": _error_schema(path)}}})
    return paths


def specification() -> dict:
    """Return the OpenAPI 3 document of the REST API."""
    predict = {"summary": "Recognise every face in a photo", "requestBody": _upload("a photo (JPEG, PNG, WebP, BMP, GIF, TIFF)"),
               "responses": {"200": _answer("names and faces", _envelope(
                   {"type": "object", "additionalProperties": {"type": "number"}},
                   faces={"type": "array", "items": FACE}, model={"type": "string"}, image_url={"type": "string"},
                   annotated=ANNOTATED)),
                   **_errors(400, 401, 413, 429, 503)}}
    train = {"summary": "Start a training job from a zip of person folders", "requestBody": _upload("a zip, one folder per person"),
             "responses": {"202": _answer("the job"), **_errors(400, 401, 409, 413, 422, 429, 507)}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "PyRecognizer", "version": "1.0.0",
                 "description": "Face recognition with dlib encodings and a KNN classifier."},
        "paths": _secured({
            "/predict": {"post": {**predict, "operationId": "predict"}},
            "/": {"post": {**predict, "operationId": "predictRoot"},
                  "get": _page("The predict page (the home page)", "predictPage")},
            "/train": {"post": {**train, "operationId": "train"},
                       "get": _page("The train page; ?job= follows a job", "trainPage", parameters=[JOB_QUERY], errors=(404,))},
            "/tune": {"post": {**train, "summary": "Start a tuning job (grid search) from a zip", "operationId": "tune"},
                      "get": _page("The tune page; ?job= follows a job", "tunePage", parameters=[JOB_QUERY], errors=(404,))},
            "/jobs": {"get": {"summary": "List jobs", "operationId": "jobs", "responses": {"200": _answer("jobs")}}},
            "/jobs/{job_id}": {"get": {"summary": "A job's state and progress", "operationId": "job", "parameters": [JOB_ID],
                                       "responses": {"200": _answer("the job"), **_errors(404)}},
                               "delete": {"summary": "Cancel a job: it ends in the state cancelled at its next "
                                                     "progress report", "operationId": "cancelJob", "parameters": [JOB_ID],
                                          "responses": {"200": _answer("the job, cancel_requested while it stops"),
                                                        **_errors(401, 404)}}},
            "/models": {"get": {"summary": "List models", "operationId": "models", "responses": {"200": _answer("models")}}},
            "/models/import": {"post": {
                "summary": "Import a gallery of precomputed encodings as a new active model",
                "description": "An .npz (numpy.savez: encodings n x 128, names n, optional files n; never unpickled) "
                               "or the same as a JSON object. Checked at once (422 GALLERY_NOT_VALID lists every "
                               "problem: shape, NaN, names), then fitted in a background job like /train.",
                "operationId": "importGallery", "requestBody": _upload("the gallery: .npz or JSON"),
                "responses": {"202": _answer("the job"), **_errors(400, 401, 409, 413, 422, 507)}}},
            "/models/{model_id}": {
                "get": {"summary": "A model's metadata", "operationId": "model", "parameters": [MODEL_ID],
                        "responses": {"200": _answer("model.json"), **_errors(404, 409)}},
                "delete": {"summary": "Delete a model (not the active one)", "operationId": "deleteModel", "parameters": [MODEL_ID],
                           "responses": {"200": _answer("deleted"), **_errors(404, 409)}}},
            "/models/{model_id}/activate": {"post": {"summary": "Make a model active", "operationId": "activate", "parameters": [MODEL_ID],
                                                     "responses": {"200": _answer("activated"), **_errors(404, 409, 507)}}},
            "/uploads/{name}": {"get": {"summary": "An annotated image", "operationId": "upload",
                                        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                                        "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {}}}, **_errors(404)}}},
            "/verify": {"post": {"summary": "Whether the main faces of two photos are the same person", "operationId": "verify",
                                 "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                                     "type": "object", "required": ["file1", "file2"],
                                     "properties": {name: BINARY for name in ("file1", "file2")}}}}},
                                 "responses": {"200": _answer("same, distance, confidence, boxes"), **_errors(400, 413, 422)}}},
            "/encode": {"post": {"summary": "The 128-d encoding and box of every face", "operationId": "encode",
                                 "requestBody": _upload("a photo"),
                                 "responses": {"200": _answer("faces with encodings"), **_errors(400, 413)}}},
            "/people": {"get": {"summary": "The active model's people with photo counts", "operationId": "people",
                                "responses": {"200": _answer("people"), **_errors(401)}}},
            "/people/{name}": {
                "get": {"summary": "A person's photos (ids, source names, added dates, face records) and negatives",
                        "operationId": "person",
                        "parameters": [NAME], "responses": {"200": _answer("the person"), **_errors(401, 404)}},
                "delete": {"summary": "Remove a person from the active model (a new model version)", "operationId": "removePerson",
                           "parameters": [NAME], "responses": {"200": _answer("the new model"), **_errors(401, 404, 409)}},
                "patch": {"summary": "Rename a person", "operationId": "renamePerson", "parameters": [NAME],
                          "requestBody": {"required": True, "content": {"application/json": {"schema": {
                              "type": "object", "required": ["name"], "properties": {"name": PERSON_NAME}}}}},
                          "responses": {"200": _answer("the new model"), **_errors(401, 404, 409, 422)}}},
            "/people/{name}/photos": {"post": {
                "summary": "Enrol photos of a person (created if new); each must show exactly one face",
                "operationId": "enrol", "parameters": [NAME],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "anyOf": [{"required": ["file"]}, {"required": ["face_id"]}],
                    "properties": {"file": {
                        "type": "array", "items": BINARY, "minItems": 1,
                        "description": "one or more photos, or a zip of that person's photos"},
                        "face": {"type": "integer", "minimum": 0,
                                 "description": "with one photo: enrol only this face (its index in predict's answer)"},
                        "face_id": {"type": "string", "pattern": "^[0-9a-f]{16}$",
                                    "description": "enrol a face record of the inbox instead of a photo"}}}}}},
                "responses": {"201": _answer("the new model, photos added and skipped"),
                              **_errors(400, 401, 404, 409, 413, 422)}}},
            "/people/{name}/photos/{photo_id}": {"delete": {
                "summary": "Remove one photo of a person", "operationId": "removePhoto", "parameters": [NAME, PHOTO_ID],
                "responses": {"200": _answer("the new model"), **_errors(401, 404, 409)}}},
            "/people/{name}/forget": {"post": {
                "summary": "Erase a person from every stored model, the encoding cache, job records, annotated copies and logs",
                "operationId": "forget", "parameters": [NAME],
                "responses": {"200": _answer("what was erased"), **_errors(401, 404, 409)}}},
            "/predict/video": {"post": {
                "summary": "Who appears when in a video (mp4, mov, mkv, webm, avi): a timeline per person and unknown face",
                "operationId": "predictVideo", "requestBody": _upload("a video: mp4, mov, mkv, webm or avi"),
                "responses": {"200": _answer("the timeline (videos up to video.direct_seconds)", _envelope(VIDEO_RESULT)),
                              "202": _answer("a longer video: the job to follow", _envelope(job_url={"type": "string"})),
                              **_errors(400, 401, 409, 413, 415, 422, 429, 503)}}},
            "/predict/video/jobs/{job_id}": {"get": {
                "summary": "A video job: state, progress (frames decoded / total), the timeline when done",
                "operationId": "videoJob", "parameters": [JOB_ID],
                "responses": {"200": _answer("the job"), **_errors(401, 404)}},
                "delete": {"summary": "Cancel a video job: for whoever started it (an anonymous caller: from the same "
                                      "address) or an admin", "operationId": "cancelVideoJob", "parameters": [JOB_ID],
                           "responses": {"200": _answer("the job, cancel_requested while it stops"),
                                         **_errors(401, 403, 404)}}},
            **camera_paths(),
            "/health": {"get": {"summary": "Liveness, the loaded model and warnings (LOW_DISK_SPACE, CAMERA_ERROR; GALLERY_STRANGER_BUDGET_EXCEEDED and "
                                           "GALLERY_RECALL_BUDGET_EXCEEDED when the active gallery is too large for its budgets); the worker pid and each "
                                           "camera's state for authorised callers", "operationId": "health", "responses": {"200": _answer("up", _envelope(
                                               {"type": "object", "properties": {
                                                   "up": {"type": "boolean"}, "model_loaded": {"type": "boolean"},
                                                   "model": {"type": ["string", "null"]},
                                                   "warnings": {"type": "array", "items": {"type": "string"}},
                                                   "pid": {"type": "integer"},
                                                   "cameras": {"type": "object", "additionalProperties": CAMERA_STATUS}}}))}}},
            **compat_paths(),
            **inbox_paths(),
        }),
        "components": {"schemas": {"Envelope": _envelope(), "DeepStackAnswer": DEEPSTACK_ANSWER,
                                   "DeepStackError": DEEPSTACK_ERROR, "CompreFaceError": COMPREFACE_ERROR},
                       "securitySchemes": SECURITY_SCHEMES},
    }
