// The official OpenAI SDK against the gateway: sdk_integration_test.go runs
// `node sdk.mjs <case>` with OPENAI_BASE_URL pointing at the gateway and
// checks the one JSON line this prints. The script only observes; the Go
// test asserts.
import OpenAI from 'openai';

const client = new OpenAI({ maxRetries: 0, timeout: 10_000 });
const messages = [{ role: 'user', content: 'Where is my order?' }];

// outcome of an async function: its value, or the error the SDK raised
async function attempt(fn) {
  try {
    return { value: await fn() };
  } catch (e) {
    return {
      error: {
        name: e?.constructor?.name,
        status: e?.status ?? null,
        code: e?.code ?? e?.error?.code ?? null,
        type: e?.type ?? e?.error?.type ?? null,
        message: String(e?.message ?? e),
      },
    };
  }
}

// read a chat stream to its end, keeping the text and the finish reason
async function readChatStream(params) {
  const out = { text: '', chunks: 0, finish_reason: null, usage: null };
  const res = await attempt(async () => {
    const stream = await client.chat.completions.create({ ...params, stream: true });
    for await (const chunk of stream) {
      out.chunks++;
      if (chunk.usage) out.usage = chunk.usage;
      for (const c of chunk.choices ?? []) {
        out.text += c.delta?.content ?? '';
        if (c.finish_reason) out.finish_reason = c.finish_reason;
      }
    }
  });
  return { ...out, error: res.error ?? null };
}

const cases = {
  // a stream that breaks after its first events
  'stream-error': async () => readChatStream({ model: 'simple_qa', messages }),

  // a complete chat stream (e.g. replayed from the cache); QUESTION
  // replaces the question
  'chat-stream': async () =>
    readChatStream({
      model: process.env.MODEL ?? 'simple_qa',
      messages: process.env.QUESTION ? [{ role: 'user', content: process.env.QUESTION }] : messages,
      stream_options: { include_usage: true },
    }),

  responses: async () => {
    const plain = await attempt(async () => {
      const r = await client.responses.create({ model: 'simple_qa', input: 'Where is my order?' });
      return { id: r.id, status: r.status, output_text: r.output_text, usage: r.usage };
    });
    const streamed = await attempt(async () => {
      const stream = await client.responses.create({ model: 'simple_qa', input: 'Where is my order?', stream: true });
      const types = [];
      let text = '';
      let usage = null;
      for await (const ev of stream) {
        types.push(ev.type);
        if (ev.type === 'response.output_text.delta') text += ev.delta;
        if (ev.type === 'response.completed') usage = ev.response.usage;
      }
      return { types, text, usage };
    });
    return { plain, streamed };
  },

  // a Responses API stream read to its end (or to the error the SDK
  // raises), keeping the event types and the text; MODEL names the model
  'responses-stream': async () => {
    const out = { types: [], text: '' };
    const res = await attempt(async () => {
      const stream = await client.responses.create({ model: process.env.MODEL ?? 'simple_qa', input: 'Where is my order?', stream: true });
      for await (const ev of stream) {
        out.types.push(ev.type);
        if (ev.type === 'response.output_text.delta') out.text += ev.delta;
      }
    });
    return { ...out, error: res.error ?? null };
  },

  // a chat request with the SDK's default retries (two), raced against
  // WAIT_MS (default 5000): what it raised, or hung: true when it was
  // still waiting then (the SDK sleeps whatever Retry-After says)
  'chat-default-retries': async () => {
    const retrying = new OpenAI({ timeout: 10_000 });
    const call = attempt(() => retrying.chat.completions.create({ model: process.env.MODEL ?? 'simple_qa', messages }));
    const wait = new Promise((resolve) => setTimeout(() => resolve({ hung: true }), Number(process.env.WAIT_MS ?? 5000)).unref());
    return Promise.race([call, wait]);
  },

  completions: async () => {
    const plain = await attempt(async () => {
      const r = await client.completions.create({ model: 'simple_qa', prompt: 'Where is my order?', max_tokens: 5 });
      return { text: r.choices[0].text, usage: r.usage };
    });
    const streamed = await attempt(async () => {
      const stream = await client.completions.create({ model: 'simple_qa', prompt: 'Where is my order?', stream: true });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
      return { text };
    });
    return { plain, streamed };
  },

  models: async () => {
    const model = await attempt(() => client.models.retrieve('gpt-4.1'));
    const route = await attempt(() => client.models.retrieve('simple_qa'));
    const missing = await attempt(() => client.models.retrieve('gpt-9'));
    const list = await attempt(async () => {
      const ids = [];
      for await (const m of client.models.list()) ids.push(m.id);
      return ids;
    });
    return { model, route, missing, list };
  },
};

const name = process.argv[2];
if (!cases[name]) {
  console.error(`unknown case ${name}; cases: ${Object.keys(cases).join(', ')}`);
  process.exit(2);
}
console.log(JSON.stringify(await cases[name]()));
process.exit(0); // an SDK call still waiting (chat-default-retries) does not hold the answer back
