// /docs: Swagger UI on this gateway's OpenAPI document (apidocs.py). A classic script, not a
// module: swagger-ui-bundle.js defines the global SwaggerUIBundle.
(() => {
  const root = /** @type {HTMLElement} */ (document.getElementById("swagger-ui"));
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    domNode: root,
    layout: "BaseLayout",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    validatorUrl: null, // its badge would ask validator.swagger.io
  });
})();
