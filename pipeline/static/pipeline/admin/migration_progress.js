// A migration run's page: poll the run's progress (JSON) and update the bars; when the
// run ends, reload once so the final report is shown. No dependencies.
'use strict';
{
    function show(box, data) {
        box.querySelector('[data-field="state_label"]').textContent = data.state_label;
        box.querySelector('[data-field="scanned"]').textContent = data.scanned;
        for (const name of ['objects', 'rows']) {
            const bar = box.querySelector(`[data-bar="${name}"]`);
            const {value, text} = data[name];
            if (value === null) {
                bar.removeAttribute('value');  // indeterminate: busy, nothing counted yet
            } else {
                bar.value = value;
            }
            box.querySelector(`[data-text="${name}"]`).textContent = text;
        }
    }

    function poll(box) {
        const interval = parseInt(box.dataset.interval, 10) || 1000;
        fetch(box.dataset.url, {credentials: 'same-origin', headers: {Accept: 'application/json'}})
            .then((response) => {
                if (!response.ok) {
                    throw new Error(`HTTP ${response.status}`);
                }
                return response.json();
            })
            .then((data) => {
                show(box, data);
                box.dataset.polls = String((parseInt(box.dataset.polls, 10) || 0) + 1);
                if (data.finished) {
                    window.location.reload();
                } else {
                    window.setTimeout(() => poll(box), interval);
                }
            })
            .catch(() => window.setTimeout(() => poll(box), interval * 5));
    }

    window.addEventListener('load', () => {
        const box = document.getElementById('migration-progress');
        if (box && box.dataset.finished !== '1') {
            poll(box);
        }
    });
}
