// zeroshot playground: plain JavaScript over the public /v1 API, with the key typed in
// (kept in sessionStorage, so it goes away with the tab). Every value from the API
// reaches the page as text (textContent), never as markup.
'use strict';

(() => {
  const KEY_STORAGE = 'zeroshot.apiKey';
  const POLL_MS = 500;
  const $ = (id) => document.getElementById(id);

  /** Children to append: nested lists flattened, absent ones (null, false) dropped. */
  const kids = (children) => children.flat().filter((c) => c !== undefined && c !== null && c !== false);

  /** Builds an element: h('li', {class: 'x', dataset: {label: 'a'}}, 'text', child). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'dataset') Object.assign(el.dataset, value);
      else if (name === 'class') el.className = value;
      else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? '' : value);
    }
    el.append(...kids(children));
    return el;
  }

  // ---------------------------------------------------------------- API calls

  /** An API error as the server reports it: {"error": {"type", "message", "param"}}. */
  class ApiError extends Error {
    constructor(status, type, message, param) {
      super(message);
      this.status = status;
      this.type = type;
      this.param = param || null;
    }
  }

  const apiKey = () => $('api-key').value.trim();

  async function readError(response) {
    const text = await response.text();
    try {
      const error = JSON.parse(text).error;
      if (error && error.message) return new ApiError(response.status, error.type, error.message, error.param);
    } catch (_) {
      // S3 answers errors in XML: <Error><Code>..</Code><Message>..</Message></Error>.
      const message = /<Message>([^<]*)<\/Message>/.exec(text);
      if (message) return new ApiError(response.status, 'storage_error', message[1], null);
    }
    return new ApiError(response.status, 'http_error', `HTTP ${response.status} ${response.statusText}`.trim(), null);
  }

  async function api(method, path, body) {
    if (!apiKey()) throw new ApiError(401, 'authentication_error', 'enter an API key first', 'api-key');
    const init = { method, headers: { Authorization: `Bearer ${apiKey()}` } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, 'network_error', `could not reach the server (${err.message})`, null);
    }
    if (!response.ok) throw await readError(response);
    return response.status === 204 ? null : response.json();
  }

  // ---------------------------------------------------------------- errors

  /** The form control an error's `param` names: `labels[2]` → the labels field. */
  function fieldFor(form, param) {
    if (!param) return null;
    if (param === 'api-key') return $('api-key');
    const base = param.split(/[.[]/)[0];
    return [...form.querySelectorAll('[data-param]')].find((el) => el.dataset.param.split(' ').includes(base)) || null;
  }

  function clearErrors(form) {
    for (const el of [form, $('key-form')]) {
      el.querySelectorAll('[aria-invalid="true"]').forEach((field) => field.removeAttribute('aria-invalid'));
      el.querySelectorAll('.field-error').forEach((p) => { p.hidden = true; p.textContent = ''; });
    }
    const banner = $(form.id.replace(/-form$/, '-error'));
    banner.hidden = true;
    banner.replaceChildren();
  }

  /** Shows an error in the form's banner and next to the field it names, highlighted. */
  function showError(form, err) {
    clearErrors(form);
    const auth = err.status === 401;
    const field = auth ? $('api-key') : fieldFor(form, err.param);
    const banner = $(form.id.replace(/-form$/, '-error'));
    const title = auth ? 'Authentication failed' : err.status ? `Error ${err.status}` : 'Error';
    banner.replaceChildren(...kids([
      h('strong', {}, title),
      err.param && !auth ? h('span', { class: 'param' }, ' in ', h('code', {}, err.param)) : null,
      h('span', { class: 'message' }, `: ${err.message}`),
    ]));
    banner.hidden = false;
    if (field) {
      field.setAttribute('aria-invalid', 'true');
      const note = $(`${field.id}-error`);
      if (note) {
        note.textContent = err.message;
        note.hidden = false;
      }
      if (!auth) field.focus();
    }
  }

  // ---------------------------------------------------------------- shared form parts

  const labelList = (value) => value.split(',').map((s) => s.trim()).filter(Boolean);

  /** `label: text` lines into [label, text] pairs; a line without a colon is an error. */
  function pairs(textarea, what) {
    const out = [];
    textarea.value.split('\n').forEach((line, i) => {
      if (!line.trim()) return;
      const colon = line.indexOf(':');
      if (colon < 1) {
        throw new ApiError(400, 'invalid_request', `line ${i + 1}: write "label: ${what}"`, textarea.dataset.param);
      }
      out.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
    });
    return out;
  }

  const modeOf = (form) => form.querySelector('input[name="mode"]:checked').value;

  /** The classification fields common to /v1/classify and POST /v1/batch. */
  function specFields(form) {
    const body = {};
    const classifier = form.querySelector('select[name="classifier"]').value;
    if (classifier) {
      body.classifier = classifier;
    } else {
      const labels = labelList(form.querySelector('input[name="labels"]').value);
      if (labels.length) body.labels = labels;
    }
    body.mode = modeOf(form);
    const threshold = form.querySelector('input[name="threshold"]');
    if (body.mode === 'multi' && threshold.value.trim() !== '') {
      const value = Number(threshold.value);
      if (!Number.isFinite(value)) throw new ApiError(400, 'invalid_request', 'threshold must be a number', 'threshold');
      body.threshold = value;
    }
    return body;
  }

  /** Single mode ignores the threshold, and a saved classifier brings its own labels. */
  function syncForm(form) {
    form.querySelector('input[name="threshold"]').disabled = modeOf(form) !== 'multi';
    const saved = form.querySelector('select[name="classifier"]').value !== '';
    form.querySelectorAll('[data-inline-labels]').forEach((el) => { el.hidden = saved; });
  }

  async function busy(button, label, work) {
    const idle = button.textContent;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    button.textContent = label;
    try {
      return await work();
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
      button.textContent = idle;
    }
  }

  const percent = (score) => `${(score * 100).toFixed(1)}%`;
  /** A stored f32 such as 0.30000001192092896, as a person wrote it: 0.3. */
  const short = (x) => String(Number(Number(x).toPrecision(4)));

  // ---------------------------------------------------------------- classify

  function scoreBars(result, threshold) {
    const chosen = new Set(result.labels);
    const scores = [...result.scores].sort((a, b) => b.score - a.score);
    return h('ol', { class: 'bars' }, scores.map((s, rank) => {
      const fill = h('span', { class: 'bar-fill' });
      fill.style.width = `${Math.max(0, Math.min(1, s.score)) * 100}%`;
      const track = h('span', { class: 'bar-track', 'aria-hidden': 'true' }, fill);
      if (threshold !== null) {
        const tick = h('span', { class: 'bar-threshold', title: `threshold ${threshold}` });
        tick.style.left = `${threshold * 100}%`;
        track.append(tick);
      }
      return h('li', {
        class: chosen.has(s.label) ? 'bar chosen' : 'bar',
        dataset: { label: s.label, score: String(s.score), rank: String(rank + 1), chosen: String(chosen.has(s.label)) },
        'aria-label': `${s.label}: ${percent(s.score)}${chosen.has(s.label) ? ', chosen' : ''}`,
      },
      h('span', { class: 'bar-label' }, h('span', { class: 'bar-name' }, s.label), chosen.has(s.label) ? h('span', { class: 'pick', 'aria-hidden': 'true' }, '✓') : null),
      track,
      h('span', { class: 'bar-value' }, percent(s.score)));
    }));
  }

  function renderClassification(data, texts, body) {
    const results = data.results || [data];
    const threshold = data.mode === 'multi' ? (body.threshold ?? null) : null;
    const cards = results.map((result, i) => h('article', { class: 'result', dataset: { index: String(i) } },
      h('div', { class: 'result-head' },
        h('p', { class: 'result-text', title: texts[i] }, texts[i]),
        h('span', { class: 'result-tokens muted' }, `${result.tokens} tokens`),
        result.truncated ? h('span', { class: 'badge warn', title: 'the text was longer than the model reads; it was cut' }, 'truncated') : null,
        data.mode === 'multi' && result.labels.length === 0 ? h('span', { class: 'badge' }, 'no label above threshold') : null),
      scoreBars(result, threshold),
      data.classifier ? correctIt(data.classifier, texts[i], result) : null));
    $('classify-results').replaceChildren(...cards);
    $('classify-empty').hidden = true;
    const meta = $('classify-meta');
    meta.replaceChildren(...kids([
      h('span', { id: 'classify-tokens' }, `${data.tokens} tokens`),
      h('span', { id: 'classify-latency' }, `${Number(data.latency_ms).toFixed(1)} ms`),
      h('span', {}, `${data.mode} mode`),
      data.classifier ? h('span', {}, data.classifier) : null,
      h('span', {}, data.model),
    ]));
    meta.hidden = false;
  }

  async function classify(event) {
    event.preventDefault();
    const form = $('classify-form');
    clearErrors(form);
    try {
      const texts = $('classify-texts').value.split('\n').map((t) => t.trim()).filter(Boolean);
      const body = texts.length > 1 ? { texts } : { text: texts[0] || '' };
      Object.assign(body, specFields(form));
      if (!body.classifier) {
        const descriptions = pairs($('classify-descriptions'), 'description');
        if (descriptions.length) body.descriptions = Object.fromEntries(descriptions);
        const examples = {};
        for (const [label, text] of pairs($('classify-examples'), 'example text')) (examples[label] ||= []).push(text);
        if (Object.keys(examples).length) body.examples = examples;
        const sourceType = $('classify-source-type').value.trim();
        if (sourceType) body.source_type = sourceType;
      }
      const data = await busy($('classify-submit'), 'Classifying…', () => api('POST', '/v1/classify', body));
      renderClassification(data, texts.length ? texts : [''], body);
    } catch (err) {
      showError(form, err);
    }
  }

  // ---------------------------------------------------------------- correct it

  /** `ticket-router@v3` → `ticket-router`. */
  const nameOf = (reference) => reference.split('@')[0];

  /** Writes a control's outcome into its status element: `ok` or `error`. */
  function note(status, text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  const errorText = (err) => `${err.status ? `Error ${err.status}` : 'Error'}: ${err.message}`;

  /** The labels a correction can pick: the saved classifier's, else the scored ones. */
  function labelsOf(name, result) {
    const saved = savedClassifiers.find((c) => c.name === name);
    return saved ? saved.labels : result.scores.map((s) => s.label);
  }

  /** Teaches the classifier `text` as an example of the picked label (a new version). */
  async function teach(name, text, select, button, status) {
    note(status, '', '');
    const before = (savedClassifiers.find((c) => c.name === name) || {}).version;
    try {
      const view = await busy(button, 'Teaching…', () => api('POST',
        `/v1/classifiers/${encodeURIComponent(name)}/examples`, { examples: { [select.value]: [text] } }));
      note(status, view.version === before ? `Already known to ${view.reference}` : `Saved as ${view.reference}`, 'ok');
      loadClassifiers();
    } catch (err) {
      note(status, errorText(err), 'error');
    }
  }

  /** A result's "correct it" control: the right label, taught to the saved classifier. */
  function correctIt(reference, text, result) {
    const name = nameOf(reference);
    const picked = result.labels[0];
    const select = h('select', { class: 'correct-label', 'aria-label': `the right label for "${text}"` },
      labelsOf(name, result).map((label) => h('option', { value: label, selected: label === picked }, label)));
    const status = h('span', { class: 'correct-status', role: 'status' });
    const button = h('button', {
      type: 'button', class: 'ghost small correct-teach', title: `add this text to ${name} as an example of the label picked`,
      onclick: () => teach(name, text, select, button, status),
    }, 'Teach');
    return h('div', { class: 'correct-it' }, h('span', { class: 'muted' }, 'Correct it:'), select, button, status);
  }

  // ---------------------------------------------------------------- batch

  let watching = 0; // bumped to stop an older job's polling

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '—';
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  const number = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'));

  function renderJob(job, step) {
    $('batch-empty').hidden = true;
    $('batch-job').hidden = false;
    $('batch-job-id').textContent = job.job_id;
    const status = $('batch-status');
    status.textContent = job.status;
    status.className = `status ${job.status}`;
    $('batch-step').textContent = step || '';
    const progress = job.progress || { percent: 0 };
    $('batch-progress-fill').style.width = `${progress.percent}%`;
    $('batch-progress').setAttribute('aria-valuenow', String(progress.percent));
    $('batch-progress').setAttribute('aria-valuetext', `${progress.percent}%`);
    const done = (job.requests_completed || 0) + (job.requests_failed || 0);
    $('batch-lines').textContent = job.requests_total === null || job.requests_total === undefined
      ? `${number(done)} / counting…` : `${number(done)} / ${number(job.requests_total)}`;
    $('batch-failed').textContent = number(job.requests_failed);
    $('batch-rate').textContent = progress.lines_per_second ? number(progress.lines_per_second) : '—';
    $('batch-eta').textContent = job.status === 'completed' ? 'done' : duration(progress.eta_seconds);
    const error = $('batch-job-error');
    error.hidden = !job.error;
    error.textContent = job.error || '';
    if (!['completed', 'cancelled'].includes(job.status)) $('batch-download').hidden = true;
  }

  async function showDownload(id) {
    const results = await api('GET', `/v1/batch/${encodeURIComponent(id)}/results`);
    const link = $('batch-download');
    link.href = results.url;
    link.setAttribute('download', `${id}.ndjson`);
    link.hidden = false;
  }

  /** Polls a job until it completes or fails, unless another job is watched meanwhile. */
  async function watch(id, step) {
    const ticket = ++watching;
    for (;;) {
      let job;
      try {
        job = await api('GET', `/v1/batch/${encodeURIComponent(id)}`);
      } catch (err) {
        if (ticket === watching) showError($('batch-form'), err);
        return;
      }
      if (ticket !== watching) return;
      renderJob(job, job.status === 'pending' ? step : '');
      // A cancelled job that had started keeps the rows scored before the cancel.
      if (job.status === 'completed' || (job.status === 'cancelled' && job.started_at)) {
        await showDownload(id).catch((err) => showError($('batch-form'), err));
        loadJobs();
        return;
      }
      if (['failed', 'cancelled'].includes(job.status) || (job.status === 'pending' && !step)) {
        loadJobs();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      step = '';
    }
  }

  async function upload(job, file) {
    const form = new FormData();
    for (const [name, value] of Object.entries(job.upload_fields)) form.append(name, value);
    form.append('file', file, file.name); // last, as S3 presigned POSTs require
    let response;
    try {
      response = await fetch(job.upload_url, { method: 'POST', body: form });
    } catch (err) {
      const origin = new URL(job.upload_url, location.href).origin;
      throw new ApiError(0, 'upload_blocked', `the upload to ${origin} did not go through (${err.message}). `
        + 'With local storage, open this page at the server\'s --public-url; with S3, allow this page\'s origin in the bucket\'s CORS rules.', 'file');
    }
    if (!response.ok) {
      const err = await readError(response);
      err.param = err.param || 'file';
      throw err;
    }
  }

  async function startBatch(event) {
    event.preventDefault();
    const form = $('batch-form');
    clearErrors(form);
    const file = $('batch-file').files[0];
    try {
      if (!file) throw new ApiError(400, 'invalid_request', 'choose an NDJSON file to classify', 'file');
      const body = specFields(form);
      body.adapt = $('batch-adapt').checked;
      await busy($('batch-submit'), 'Working…', async () => {
        watching++; // stop polling a previously watched job
        const job = await api('POST', '/v1/batch', body);
        renderJob(job, `Uploading ${file.name} (${number(file.size)} bytes)…`);
        await upload(job, file);
        renderJob(job, 'Starting…');
        await api('POST', `/v1/batch/${encodeURIComponent(job.job_id)}/start`);
        loadJobs();
        watch(job.job_id, 'Waiting for a worker…');
      });
    } catch (err) {
      showError(form, err);
    }
  }

  async function loadJobs() {
    if (!apiKey()) return;
    let page;
    try {
      page = await api('GET', '/v1/batch?limit=10');
    } catch (err) {
      showError($('batch-form'), err);
      return;
    }
    const rows = page.data.map((job) => {
      const done = (job.requests_completed || 0) + (job.requests_failed || 0);
      return h('tr', { dataset: { job: job.job_id } },
        h('td', {}, h('button', { type: 'button', class: 'link', title: 'show this job', onclick: () => watch(job.job_id) }, job.job_id)),
        h('td', {}, h('span', { class: `status ${job.status}` }, job.status)),
        h('td', { class: 'labels-cell' }, job.classifier || (job.labels || []).join(', ')),
        h('td', { class: 'num' }, job.requests_total === null ? number(done) : `${number(done)} / ${number(job.requests_total)}`),
        h('td', { class: 'num' }, `${job.progress.percent}%`),
        h('td', {}, new Date(job.created_at).toLocaleString()));
    });
    $('jobs-list').replaceChildren(...rows);
    $('jobs-empty').hidden = rows.length > 0;
  }

  // ---------------------------------------------------------------- saved classifiers

  let savedClassifiers = [];

  function fillPickers() {
    document.querySelectorAll('.classifier-picker').forEach((select) => {
      const current = select.value;
      select.replaceChildren(select.options[0],
        ...savedClassifiers.map((c) => h('option', { value: c.name }, `${c.name} (v${c.version}) — ${c.labels.length} labels`)));
      select.value = savedClassifiers.some((c) => c.name === current) ? current : '';
      syncForm(select.form);
    });
  }

  /** Picking a saved classifier shows its saved mode and threshold (sent as overrides). */
  function applyClassifier(select) {
    const saved = savedClassifiers.find((c) => c.name === select.value);
    if (saved) {
      select.form.querySelector(`input[name="mode"][value="${saved.mode}"]`).checked = true;
      select.form.querySelector('input[name="threshold"]').value = short(saved.threshold);
    }
    syncForm(select.form);
  }

  function useClassifier(name) {
    const select = $('classify-classifier');
    select.value = name;
    applyClassifier(select);
    selectTab('classify');
    $('classify-texts').focus();
  }

  const plural = (n, word) => `${number(n)} ${word}${n === 1 ? '' : 's'}`;

  /** Where an adapted version's adaptation came from, and what it was fitted on. */
  function adaptedText(from) {
    if (!from) return 'adapted';
    const source = from.job_id ? `job ${from.job_id}` : plural(from.texts, 'text');
    return `adapted from ${source} (fitted on ${plural(from.adaptation.sample_lines, 'text')})`;
  }

  /** How a version was made, in words: created, updated, adapted from …, +K examples. */
  function originText(view) {
    const origin = view.origin || { kind: 'saved' };
    if (origin.kind === 'taught') {
      return `+${plural(origin.added, 'example')}${origin.removed > 0 ? `, −${origin.removed} removed` : ''}`;
    }
    if (origin.kind === 'adapted') return adaptedText(view.adapted_from);
    return view.version === 1 ? 'created' : 'updated';
  }

  const versionLine = (view) => h('li', {
    class: 'classifier-version', dataset: { version: String(view.version) }, title: new Date(view.created_at).toLocaleString(),
  }, `v${view.version} — ${originText(view)}`);

  /** A classifier's versions, newest first, filled in once they are loaded. */
  function versionList(name) {
    const list = h('ol', { class: 'versions', 'aria-label': `versions of ${name}` });
    api('GET', `/v1/classifiers/${encodeURIComponent(name)}/versions`).then(
      (page) => list.replaceChildren(...page.data.map(versionLine)),
      (err) => list.replaceChildren(h('li', { class: 'versions-error' }, errorText(err))));
    return list;
  }

  /** Outcomes of adaptations, by classifier: shown once, in the list reloaded after them. */
  const adaptNotes = new Map();

  /** The /adapt body: the non-blank lines, or the batch job id; exactly one of them. */
  function adaptBody(texts, job) {
    const lines = texts.value.split('\n').map((t) => t.trim()).filter(Boolean);
    const jobId = job.value.trim();
    if (lines.length && jobId) throw new ApiError(0, 'invalid_request', 'give either texts or a batch job id, not both', null);
    if (jobId) return { job_id: jobId };
    if (lines.length) return { texts: lines };
    throw new ApiError(0, 'invalid_request', 'paste texts (one per line) or a finished batch job id', null);
  }

  /** Adapts the classifier to unlabeled texts or a job's; a success reloads the list. */
  async function adapt(name, texts, job, button, status) {
    note(status, '', '');
    try {
      const body = adaptBody(texts, job);
      const view = await busy(button, 'Adapting…', () => api('POST', `/v1/classifiers/${encodeURIComponent(name)}/adapt`, body));
      const fitted = view.adapted_from ? `: fitted on ${plural(view.adapted_from.adaptation.sample_lines, 'text')}` : '';
      adaptNotes.set(name, [`Saved as ${view.reference}${fitted}`, 'ok']);
      await loadClassifiers();
    } catch (err) {
      note(status, errorText(err), 'error');
    }
  }

  /** The outcome kept for `name`'s form, forgotten once taken. */
  function takeOutcome(name) {
    const outcome = adaptNotes.get(name);
    adaptNotes.delete(name);
    return outcome;
  }

  /** A labelled field: `label` and its muted `hint` above `control`. */
  const labelled = (control, label, hint) => h('div', { class: 'field' },
    h('label', { for: control.id }, `${label} `, h('span', { class: 'muted' }, `— ${hint}`)), control);

  /** A classifier's Adapt form, open when it has an outcome to show. */
  function adaptForm(name) {
    const texts = h('textarea', { id: `adapt-${name}-texts`, class: 'adapt-texts', rows: '4', placeholder: 'one unlabeled text per line' });
    const job = h('input', { id: `adapt-${name}-job`, class: 'adapt-job', type: 'text', spellcheck: 'false', autocomplete: 'off' });
    const button = h('button', { type: 'submit', class: 'ghost small adapt-submit' }, 'Adapt');
    const status = h('span', { class: 'adapt-status', role: 'status' });
    const outcome = takeOutcome(name);
    if (outcome) note(status, ...outcome);
    const submit = (event) => {
      event.preventDefault();
      adapt(name, texts, job, button, status);
    };
    return h('details', { class: 'adapt', open: Boolean(outcome) }, h('summary', {}, 'Adapt to your texts'),
      h('form', { class: 'adapt-form', novalidate: true, onsubmit: submit },
        labelled(texts, 'Texts', 'one per line, 200 or more'),
        labelled(job, 'or a finished batch job', 'its id'),
        h('div', { class: 'actions' }, button, status)));
  }

  function classifierItem(c) {
    return h('li', { class: 'classifier', dataset: { classifier: c.name } },
      h('div', { class: 'classifier-head' },
        h('h3', {}, c.name),
        h('span', { class: 'badge', title: 'latest version' }, `v${c.version}`),
        h('span', { class: 'muted' }, c.mode === 'multi' ? `multi · threshold ${short(c.threshold)}` : 'single'),
        c.source_type ? h('span', { class: 'muted' }, `· ${c.source_type}`) : null,
        h('button', { type: 'button', class: 'ghost small', onclick: () => useClassifier(c.name) }, 'Use in Classify')),
      c.description ? h('p', { class: 'classifier-description' }, c.description) : null,
      h('ul', { class: 'chips', 'aria-label': `labels of ${c.name}` }, c.labels.map((label) => h('li', {
        class: 'chip', title: (c.descriptions && c.descriptions[label]) || undefined,
      }, label))),
      versionList(c.name),
      adaptForm(c.name));
  }

  function renderClassifiers() {
    const items = savedClassifiers.map(classifierItem);
    $('classifiers-list').replaceChildren(...items);
    $('classifiers-empty').hidden = items.length > 0;
  }

  let classifierLoads = 0; // bumped by each load, so that only the newest one renders

  async function loadClassifiers() {
    if (!apiKey()) return;
    const ticket = ++classifierLoads;
    const banner = $('classifiers-error');
    let page;
    try {
      page = await api('GET', '/v1/classifiers');
    } catch (err) {
      if (ticket !== classifierLoads) return;
      banner.replaceChildren(h('strong', {}, err.status === 401 ? 'Authentication failed' : 'Error'), `: ${err.message}`);
      banner.hidden = false;
      return;
    }
    if (ticket !== classifierLoads) return;
    savedClassifiers = page.data;
    banner.hidden = true;
    fillPickers();
    renderClassifiers();
  }

  // ---------------------------------------------------------------- tabs, key, start-up

  const TABS = ['classify', 'batch', 'classifiers'];

  function selectTab(name, focus) {
    for (const tab of TABS) {
      const selected = tab === name;
      const button = $(`tab-${tab}`);
      button.setAttribute('aria-selected', String(selected));
      button.tabIndex = selected ? 0 : -1;
      $(`page-${tab}`).hidden = !selected;
      if (selected && focus) button.focus();
    }
    history.replaceState(null, '', `#${name}`);
    if (name === 'batch') loadJobs();
    if (name === 'classifiers') loadClassifiers();
  }

  function setUpTabs() {
    TABS.forEach((tab, i) => {
      const button = $(`tab-${tab}`);
      button.addEventListener('click', () => selectTab(tab));
      button.addEventListener('keydown', (event) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (step) selectTab(TABS[(i + step + TABS.length) % TABS.length], true);
      });
    });
    const initial = location.hash.slice(1);
    selectTab(TABS.includes(initial) ? initial : 'classify');
  }

  function setUpKey() {
    const input = $('api-key');
    input.value = sessionStorage.getItem(KEY_STORAGE) || '';
    input.addEventListener('input', () => {
      sessionStorage.setItem(KEY_STORAGE, input.value.trim());
      input.removeAttribute('aria-invalid');
      $('api-key-error').hidden = true;
    });
    input.addEventListener('change', () => { loadClassifiers(); loadJobs(); });
    $('key-form').addEventListener('submit', (event) => { event.preventDefault(); loadClassifiers(); loadJobs(); });
    $('api-key-show').addEventListener('click', (event) => {
      const show = input.type === 'password';
      input.type = show ? 'text' : 'password';
      event.target.textContent = show ? 'Hide' : 'Show';
      event.target.setAttribute('aria-pressed', String(show));
    });
  }

  async function showModel() {
    try {
      const ready = await (await fetch('/readyz')).json();
      $('model-name').textContent = ready.model || 'model loading…';
    } catch (_) {
      $('model-name').textContent = '';
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    setUpKey();
    for (const form of [$('classify-form'), $('batch-form')]) {
      form.addEventListener('change', (event) => {
        if (event.target.name === 'classifier') applyClassifier(event.target);
        else syncForm(form);
      });
      syncForm(form);
    }
    $('classify-form').addEventListener('submit', classify);
    $('classify-form').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) $('classify-form').requestSubmit();
    });
    $('batch-form').addEventListener('submit', startBatch);
    $('jobs-refresh').addEventListener('click', loadJobs);
    $('classifiers-refresh').addEventListener('click', loadClassifiers);
    setUpTabs();
    loadClassifiers();
    showModel();
  });
})();
