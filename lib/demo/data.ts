// The demo's data: three customer-service tasks (order status, technical support,
// billing), each with three intents, generated from templates with a seeded generator,
// so every run sees the same examples without any download.
import type { Example } from '../train/data';
import { mulberry32 } from '../core/random';

export interface DemoTask {
  name: string;
  description: string;
  train: Example[];
  eval: Example[];
}

type Templates = Record<string, string[]>;

const SLOTS: Record<string, string[]> = {
  item: ['shoes', 'laptop', 'phone', 'book', 'jacket', 'headphones', 'camera', 'watch', 'backpack', 'tablet'],
  time: ['yesterday', 'last week', 'today', 'this morning', 'on monday', 'two days ago'],
  screen: ['settings', 'the camera', 'my profile', 'the cart', 'the home screen', 'notifications'],
  opener: ['', '', 'hi', 'hello', 'hey there', 'good morning', 'excuse me'],
  closer: ['', '', 'thanks', 'please help', 'thank you', 'as soon as possible', 'any idea'],
};

const TASKS: { name: string; description: string; intents: Templates }[] = [
  {
    name: 'order_status',
    description: 'where an order is, cancelling it, changing its address',
    intents: {
      where_is_order: ['where is my {item} order', 'my {item} has not arrived yet', 'can you track my package', 'when will my {item} be delivered', 'what is the status of my order', 'the {item} i ordered {time} is still not here'],
      cancel_order: ['please cancel my {item} order', 'i want to cancel the order i placed {time}', 'stop my order before it ships', 'cancel the {item} i bought', 'i changed my mind about the {item} please cancel it'],
      change_address: ['i need to change the delivery address', 'please ship my {item} to a new address', 'update the shipping address on my order', 'i moved {time} so send the {item} to my new home', 'the address on my order is wrong'],
    },
  },
  {
    name: 'tech_support',
    description: 'login problems, app crashes, slow connections',
    intents: {
      login_problem: ['i cannot log in to my account', 'my password reset link does not work', 'the login page says invalid password', 'i am locked out of my account since {time}', 'two factor code never arrives when i sign in'],
      app_crash: ['the app crashes when i open {screen}', 'the application closes right after start', 'it keeps freezing and then crashes', 'the app crashed {time} when i tapped {screen}', 'every time i open {screen} the app quits'],
      slow_connection: ['the connection is very slow {time}', 'pages take forever to load', 'the network keeps dropping', 'videos buffer all the time since {time}', 'my internet is slow on the {item}'],
    },
  },
  {
    name: 'billing',
    description: 'refunds, invoice copies, double charges',
    intents: {
      refund_request: ['i would like a refund for my {item}', 'please return my money for the {item}', 'how do i get my money back', 'i returned the {item} {time} and want a refund', 'refund the {item} please'],
      invoice_copy: ['can you send me a copy of my invoice', 'i need the receipt for the {item}', 'where can i download my invoice', 'please email the invoice from {time}', 'i lost the receipt for my order'],
      double_charge: ['i was charged twice for my {item}', 'there are two payments on my card', 'you billed me two times {time}', 'my card shows a double charge for the {item}', 'the same payment went through twice'],
    },
  },
];


function fill(template: string, rnd: () => number): string {
  const pick = (xs: string[]) => xs[Math.floor(rnd() * xs.length)];
  const body = template.replace(/\{(\w+)\}/g, (_, k: string) => pick(SLOTS[k]));
  return [pick(SLOTS.opener), body, pick(SLOTS.closer)].filter(Boolean).join(' ');
}

/** Three tasks; per intent `perIntent` training and `perIntent / 3` evaluation examples. */
export function demoTasks(perIntent = 60, seed = 7): DemoTask[] {
  return TASKS.map((t, ti) => {
    const rnd = mulberry32(seed * 1000 + ti);
    const make = (n: number) => {
      const out: Example[] = [];
      for (const [label, templates] of Object.entries(t.intents))
        for (let i = 0; i < n; i++) out.push({ text: fill(templates[Math.floor(rnd() * templates.length)], rnd), label });
      return out;
    };
    return { name: t.name, description: t.description, train: make(perIntent), eval: make(Math.max(3, Math.round(perIntent / 3))) };
  });
}

/** Queries for the routing part of the demo: each names the task it belongs to. */
export const DEMO_QUERIES: { task: string; text: string }[] = [
  { task: 'order_status', text: 'hi where is my camera order' },
  { task: 'billing', text: 'you charged my card twice for the watch' },
  { task: 'tech_support', text: 'the app crashes when i open settings' },
  { task: 'order_status', text: 'please send the jacket to my new address' },
  { task: 'billing', text: 'can i get a copy of the invoice' },
  { task: 'tech_support', text: 'i forgot my password and cannot log in' },
];

/**
 * Held-out paraphrases: hand-written, sharing no template with the training data, so they
 * measure whether a backbone's features carry the intent beyond the words seen in training.
 */
const PARAPHRASES: Record<string, Record<string, string[]>> = {
  order_status: {
    where_is_order: ['has my parcel shipped', 'any news on the delivery of my purchase', 'the courier never came with my package', 'how long until my stuff shows up', 'i am still waiting for the thing i bought'],
    cancel_order: ['i no longer want what i purchased, call it off', 'please do not send the item, i want to withdraw the purchase', 'undo my purchase please', 'scrap the order i made', 'i would like to abort my purchase'],
    change_address: ['deliver it to my office instead of my house', 'my shipping details are outdated', 'can the parcel go to a different street', 'i gave you the old location for delivery', 'send the package somewhere else please'],
  },
  tech_support: {
    login_problem: ['it will not accept my credentials', 'i forgot the password and cannot get into my profile', 'signing in fails every time', 'my account access is blocked', 'the verification code to enter never shows up'],
    app_crash: ['the program shuts down unexpectedly', 'the software dies as soon as i launch it', 'it quits on its own when i tap a button', 'the mobile app keeps closing by itself', 'the application stops working and disappears'],
    slow_connection: ['everything loads really slowly', 'downloads crawl at a snail pace', 'the wifi signal keeps cutting out', 'streaming stutters constantly', 'the site is sluggish and times out'],
  },
  billing: {
    refund_request: ['i want to be reimbursed for this purchase', 'give me back what i paid', 'can i get my payment returned', 'i expect a reimbursement for the broken item', 'please credit the amount back to me'],
    invoice_copy: ['i need a bill for my records', 'send me the receipt by mail', 'where is the proof of purchase document', 'please provide the billing statement', 'i require a copy of the bill for taxes'],
    double_charge: ['the payment was taken two times', 'my bank shows the same amount debited twice', 'i see a duplicate transaction on my statement', 'you took the money twice', 'i got billed again for the same order'],
  },
};

/** The paraphrase set of a task (see PARAPHRASES). */
export function demoParaphrases(task: string): Example[] {
  const p = PARAPHRASES[task];
  if (!p) throw new Error(`demo: no paraphrases for task '${task}'`);
  return Object.entries(p).flatMap(([label, texts]) => texts.map((text) => ({ text, label })));
}

/**
 * A fourth task that mixes the three: each intent needs two of them at once (a refund for a broken
 * order, a cancellation after a double charge, a crash while paying). Few examples per intent, so
 * what the three trained adapters already know matters: the demo trains an AdapterFusion over them
 * and, at the same step budget, one fresh adapter, and compares the two.
 */
const MIXED: Templates = {
  refund_broken_item: ['my {item} arrived broken and i want my money back', 'the {item} came damaged {time} please refund it', 'refund me for the broken {item} you delivered', 'the package with my {item} was crushed, i want a refund', 'the {item} i ordered does not work, give me my money back'],
  cancel_after_double_charge: ['you charged me twice so cancel my {item} order', 'i was billed two times {time}, stop the order', 'cancel the {item} because the payment went through twice', 'two charges on my card, please cancel everything', 'double payment for the {item}, i want the order cancelled'],
  crash_while_paying: ['the app crashed while i was paying for my {item}', 'checkout keeps crashing and my order did not go through', 'the app closes when i open the cart to pay', 'payment screen froze {time} and the app quit', 'i cannot finish buying the {item} because the app crashes'],
};
const MIXED_PARAPHRASES: Record<string, string[]> = {
  refund_broken_item: ['what you sent me is smashed, i expect reimbursement', 'the parcel was damaged in transit, return my payment', 'it showed up cracked so credit the amount back',
    'the screen of the thing i bought is shattered, pay me back', 'the courier dropped my box and it is ruined, i want compensation', 'it was defective on arrival so reimburse me'],
  cancel_after_double_charge: ['the money was taken two times, call off my purchase', 'duplicate debit on my statement so undo the purchase', 'i got billed again for it, withdraw the order',
    'my bank took the amount twice, scrap the whole thing', 'i see two identical payments, please abort my purchase', 'charged a second time so i do not want it anymore'],
  crash_while_paying: ['the software dies on the payment step', 'the program shuts down as soon as i try to check out', 'buying fails because the application stops working',
    'it quits on its own when i enter my card', 'the mobile app closes by itself at the purchase button', 'i try to pay and the application disappears'],
};

export function demoMixedTask(perIntent = 3, seed = 11): DemoTask & { paraphrases: Example[] } {
  const rnd = mulberry32(seed * 1000);
  const make = (n: number) => {
    const out: Example[] = [];
    for (const [label, templates] of Object.entries(MIXED))
      for (let i = 0; i < n; i++) out.push({ text: fill(templates[Math.floor(rnd() * templates.length)], rnd), label });
    return out;
  };
  return {
    name: 'mixed', description: 'requests that need two tasks at once', train: make(perIntent), eval: make(10),
    paraphrases: Object.entries(MIXED_PARAPHRASES).flatMap(([label, texts]) => texts.map((text) => ({ text, label }))),
  };
}
