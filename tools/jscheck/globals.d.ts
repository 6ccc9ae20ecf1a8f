// Globals the dashboard gets from classic <script> tags rather than imports.
interface Window {
  // uPlot, vendored (static/vendor/uPlot.iife.min.js) without its type declarations.
  uPlot: any;
}
