// Clientside helpers for velodash (loaded automatically from assets/).
window.dash_clientside = Object.assign({}, window.dash_clientside, {
    velodash: {
        // Mirror a page's view state (a query string such as "?ds=sample&gene=Top2a") into the
        // address bar without reloading or re-rendering the page, so reload and shared links
        // restore the view (page layouts read the query string).
        syncUrl: function (search) {
            if (typeof search !== "string" || search === window.location.search) {
                return window.dash_clientside.no_update;
            }
            window.history.replaceState(null, "", window.location.pathname + search);
            return search;
        },
        // The shape of a lasso or box selection ({kind, x, y}) from a dcc.Graph's selectedData,
        // so that only the polygon goes to the server, never the list of selected points
        // (dashboard.selections.geometry_from_event is the same in Python). A cleared
        // selection (null) changes nothing: the panel has its own Clear button.
        selectionShape: function (selected) {
            if (!selected) {
                return window.dash_clientside.no_update;
            }
            const shapes = [["lasso", "lassoPoints"], ["box", "range"]];
            for (const [kind, key] of shapes) {
                const shape = selected[key];
                if (!shape) {
                    continue;
                }
                const keys = Object.keys(shape).sort();
                const xk = keys.find((k) => k.startsWith("x"));
                const yk = keys.find((k) => k.startsWith("y"));
                if (xk && yk) {
                    return {kind: kind, x: shape[xk], y: shape[yk]};
                }
            }
            return window.dash_clientside.no_update;
        },
    },
});

// Every figure's modebar gets an SVG download next to plotly's PNG camera; both use the file
// name the page sets in config.toImageButtonOptions (dataset and view). The button must be in
// plotly's global config before the first plot, so it is installed the moment plotly.js
// assigns window.Plotly (it may load after this file), through a one-time property setter.
(function () {
    const svgButton = {
        name: "downloadSvg",
        title: "Download plot as SVG",
        click: function (gd) {
            const options = (gd._context && gd._context.toImageButtonOptions) || {};
            window.Plotly.downloadImage(gd, {
                format: "svg",
                filename: options.filename || "velodash",
                width: gd._fullLayout.width,
                height: gd._fullLayout.height,
            });
        },
    };
    const install = (plotly) => {
        if (plotly && plotly.setPlotConfig) {
            svgButton.icon = plotly.Icons["camera-retro"];
            plotly.setPlotConfig({modeBarButtonsToAdd: [svgButton]});
        }
    };
    if (window.Plotly) {
        install(window.Plotly);
        return;
    }
    let plotly;
    Object.defineProperty(window, "Plotly", {
        configurable: true,
        get: () => plotly,
        set: (value) => {
            plotly = value;
            install(value);
        },
    });
})();
