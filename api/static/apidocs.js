// /docs: Swagger UI over /openapi.json (api/apidocs.py). A static file: the content security
// policy runs no inline script.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  if (typeof window.SwaggerUIBundle !== "function") return; // not fetched yet: the page says so
  const root = document.getElementById("swagger-ui");
  const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content || "";
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    validatorUrl: null, // the default would send the spec to validator.swagger.io
    // A browser's request carries an Origin, so the service asks it for the CSRF token as it
    // asks the other pages' requests (REST clients without a cookie or Origin need none).
    requestInterceptor: (request) => {
      if (request.method && request.method.toUpperCase() !== "GET" && csrfToken) {
        request.headers["X-CSRFToken"] = csrfToken;
      }
      return request;
    },
  });
});
