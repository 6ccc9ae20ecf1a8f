// Globals the dashboard gets from classic <script> tags rather than imports.
interface Window {
  // uPlot, vendored (static/vendor/uPlot.iife.min.js) without its type declarations.
  uPlot: any;
  // Swagger UI's instance, kept where its own examples keep it (static/js/swagger.js).
  ui: any;
}
// Vendored without type declarations: swagger-ui-bundle.js (/docs) and redoc.standalone.js (/redoc).
declare const SwaggerUIBundle: any;
declare const Redoc: any;
