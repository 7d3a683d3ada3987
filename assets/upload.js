// The home page's upload (issue 16): a dropped or chosen file is streamed to the server as
// multipart form data with XMLHttpRequest (never read into memory here), with a progress bar
// (percent and MB) and a Cancel button. The route's JSON answer goes to the `upload-result`
// store, whose callback (dashboard/web/pages/home.py) opens the dataset or shows the error.
(function () {
    const MB = 1024 * 1024;
    let request = null;
    let picker = null;

    const setProps = (id, props) => window.dash_clientside.set_props(id, props);
    const zone = () => document.getElementById("upload");

    function finish(result) {
        request = null;
        setProps("upload-progress", {hidden: true});
        setProps("upload-result", {data: Object.assign({at: Date.now()}, result)});
    }

    function showProgress(name, loaded, total) {
        const percent = total ? Math.min(100, Math.floor((100 * loaded) / total)) : 0;
        const text =
            loaded >= total
                ? name + ": received, checking the file…"
                : name + ": " + percent + "% · " + (loaded / MB).toFixed(1) + " of " +
                  (total / MB).toFixed(1) + " MB";
        setProps("upload-progress", {hidden: false});
        setProps("upload-progress-fill", {style: {width: percent + "%"}});
        setProps("upload-progress-text", {children: text});
    }

    function answer(xhr) {
        try {
            const body = JSON.parse(xhr.responseText);
            if (body && (body.error || body.href)) {
                return body;
            }
        } catch (err) {
            // not JSON: a proxy's or the sign-in gate's plain-text answer
        }
        const text = (xhr.responseText || "").trim().slice(0, 300);
        return {error: text || "The upload failed (HTTP " + xhr.status + "); please try again."};
    }

    function send(file) {
        const target = zone();
        if (!target || request || !file) {
            return;
        }
        if (file.size > Number(target.dataset.maxBytes)) {
            finish({
                error: "The file is larger than the " + target.dataset.maxMb + " MB upload " +
                    "limit; open it from the command line instead: `velodash run FILE`.",
            });
            return;
        }
        const form = new FormData();
        form.append("file", file, file.name);
        const xhr = new XMLHttpRequest();
        request = xhr;
        xhr.open("POST", target.dataset.url);
        xhr.upload.onprogress = (e) =>
            showProgress(file.name, e.loaded, e.lengthComputable ? e.total : file.size);
        xhr.onload = () => finish(answer(xhr));
        xhr.onerror = () =>
            finish({error: "The upload was interrupted (network error); nothing was stored."});
        xhr.onabort = () => finish({error: "Upload cancelled; nothing was stored."});
        showProgress(file.name, 0, file.size || 1);
        xhr.send(form);
    }

    // One file input outside the page's React tree (so re-renders never drop it).
    function filePicker() {
        if (!picker) {
            picker = document.createElement("input");
            picker.type = "file";
            picker.id = "upload-file";
            picker.accept = ".h5ad,.loom";
            picker.hidden = true;
            picker.addEventListener("change", () => {
                send(picker.files[0]);
                picker.value = "";
            });
            document.body.appendChild(picker);
        }
        return picker;
    }

    document.addEventListener("DOMContentLoaded", filePicker);
    document.addEventListener("click", (e) => {
        if (e.target.closest("#upload")) {
            filePicker().click();
        } else if (e.target.closest("#upload-cancel") && request) {
            request.abort();
        }
    });
    document.addEventListener("keydown", (e) => {
        if ((e.key === "Enter" || e.key === " ") && e.target.closest("#upload")) {
            e.preventDefault();
            filePicker().click();
        }
    });
    for (const type of ["dragenter", "dragover", "dragleave", "drop"]) {
        document.addEventListener(type, (e) => {
            const target = e.target.closest && e.target.closest("#upload");
            if (!target) {
                return;
            }
            e.preventDefault();
            target.classList.toggle("dragging", type === "dragenter" || type === "dragover");
            if (type === "drop" && e.dataTransfer.files.length) {
                send(e.dataTransfer.files[0]);
            }
        });
    }
})();
