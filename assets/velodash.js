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

        // The shell's job bar from the polled job state: visibility, sentence, fill width (the
        // CSS transition animates it between polls) and whether this user may cancel.
        jobBar: function (state) {
            const hidden = { display: "none" };
            if (!state || (!state.job && !state.error)) {
                return [hidden, "", { width: "0%" }, hidden];
            }
            if (state.error) {
                return [{ display: "flex" }, state.message, { width: "0%" }, hidden];
            }
            let message = state.message;
            if (state.more) {
                message += " (" + state.more + " more queued for this dataset)";
            }
            const cancel = state.can_cancel ? { display: "inline-block" } : hidden;
            return [{ display: "flex" }, message, { width: state.percent + "%" }, cancel];
        },

        // The live sentence inside "being fitted" notices of the dataset in the job state.
        pendingText: function (state, ids) {
            return (ids || []).map(function (id) {
                if (state && state.job && state.ds === id.ds) {
                    return state.message;
                }
                return window.dash_clientside.no_update;
            });
        },

        // A page that was waiting for its dataset's fit opens once the fit has ended (done: the
        // figures; failed or cancelled: what to do next). The home page refreshes its parts.
        reloadWhenFitted: function (finished) {
            if (
                finished &&
                window.location.pathname !== "/" &&
                document.querySelector(".job-pending")
            ) {
                window.location.reload();
            }
            return window.dash_clientside.no_update;
        },

        // The home page's Fit button: off for viewers, and while this dataset has a fit queued or
        // running (asking again would only join it).
        fitButtonDisabled: function (state, canFit) {
            return !canFit || Boolean(state && state.job);
        },

        // Copy the address of the current view (the URL carries its state) to the clipboard.
        copyLink: function () {
            const url = window.location.href;
            const fallback = function () {
                const area = document.createElement("textarea");
                area.value = url;
                area.setAttribute("readonly", "");
                area.style.position = "fixed";
                area.style.opacity = "0";
                document.body.appendChild(area);
                area.select();
                try {
                    document.execCommand("copy");
                } finally {
                    document.body.removeChild(area);
                }
            };
            if (navigator.clipboard && window.isSecureContext) {
                navigator.clipboard.writeText(url).catch(fallback);
            } else {
                fallback();
            }
            setTimeout(function () {
                window.dash_clientside.set_props("copy-link", { children: "Copy link" });
            }, 2000);
            return ["Link copied: " + url, "Link copied"];
        },
        // The shape of a lasso or box selection ({kind, x, y}) from a dcc.Graph's selectedData,
        // so that only the polygon goes to the server, never the list of selected points
        // (dashboard.data.selections.geometry_from_event is the same in Python). A cleared
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
