import { readFile } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import sharp from 'sharp';
const d = '/work/shared/data/chest_xray_train/NORMAL/';
const files = readdirSync(d).slice(0, 300);
const bytes = await Promise.all(files.map((f) => readFile(d + f)));
const run = async (label: string) => {
  for (let r = 0; r < 2; r++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    for (const b of bytes) {
      await sharp(b).metadata();
      await sharp(b, { failOn: 'warning', sequentialRead: true }).raw().toBuffer({ resolveWithObject: true });
    }
    const c = process.cpuUsage(c0);
    const t1 = performance.now();
    const c1 = process.cpuUsage();
    await Promise.all(
      bytes.map(async (b) => {
        await sharp(b).metadata();
        await sharp(b, { failOn: 'warning', sequentialRead: true }).raw().toBuffer({ resolveWithObject: true });
      }),
    );
    const cc = process.cpuUsage(c1);
    console.log(
      label,
      'serial cpu',
      ((c.user + c.system) / 1000 / bytes.length).toFixed(3),
      'wall',
      ((t1 - t0) / bytes.length).toFixed(3),
      '| parallel cpu',
      ((cc.user + cc.system) / 1000 / bytes.length).toFixed(3),
      'wall',
      ((performance.now() - t1) / bytes.length).toFixed(3),
    );
  }
};
console.log('concurrency', sharp.concurrency(), 'cache', JSON.stringify(sharp.cache()));
await run('default');
sharp.concurrency(1);
await run('concurrency1');
sharp.cache(false);
await run('conc1+nocache');
