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
    },
});
