// /redoc: ReDoc on this gateway's OpenAPI document (apidocs.py); redoc.standalone.js defines
// the global Redoc.
(() => {
  const root = /** @type {HTMLElement} */ (document.getElementById("redoc"));
  Redoc.init(root.dataset.openapi, { hideDownloadButton: false }, root);
})();
