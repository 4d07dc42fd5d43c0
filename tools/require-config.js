// Copied into the book's _static/ folder by tools/offline_assets.py and loaded between require.js
// and the ipywidgets HTML manager (_config.yml: nb_ipywidgets_js). The manager loads its icon fonts
// relative to the URL that require.js gives its module, which by default is the page's own folder
// (notebooks/@jupyter-widgets/html-manager/dist/...); point that module at _static/html-manager/.
(function () {
  var src = document.currentScript.src;
  var staticDir = src.slice(0, src.lastIndexOf("/") + 1);
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": staticDir + "html-manager" } });
})();
