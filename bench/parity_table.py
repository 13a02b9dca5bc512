"""Largest error of the kernels against fusedrnn.reference, per cell and dtype.

Every compiled instruction-set variant, lengths, reverse, the LSTM projection, sizes that
cross the input-projection chunks and use both threads.  Error = max|kernel - reference| /
max(1, max|reference|), over outputs and final states (forward) and every gradient.

    python bench/parity_table.py
"""
import numpy as np

import fusedrnn
from fusedrnn import ops, reference as ref
worst={}
for isa in ['baseline','avx2','avx512']:
 fusedrnn._core.set_isa(isa)
 for dt in [np.float64, np.float32]:
  for (T,B,I,H,P) in [(5,3,4,6,0),(7,13,9,50,0),(60,4,20,100,0),(3,1,5,17,0),(25,100,5,7,0),(6,20,33,97,0),(6,16,20,90,0),(8,5,6,9,4)]:
   rng=np.random.default_rng(1)
   for cell,G in [('lstm',4),('gru',3),('rnn',1)]:
    if P and cell!='lstm': continue
    for act in (['tanh','relu'] if cell!='gru' else ['tanh']):
     x=rng.standard_normal((T,B,I)).astype(dt); k=1/np.sqrt(H); PP=P or H
     wih,whh,bih,bhh=[rng.uniform(-k,k,s).astype(dt) for s in [(G*H,I),(G*H,PP),(G*H,),(G*H,)]]
     whr=rng.uniform(-k,k,(P,H)).astype(dt) if P else None
     h0=rng.standard_normal((B,PP)).astype(dt); c0=rng.standard_normal((B,H)).astype(dt)
     L=rng.integers(1,T+1,B); L[0]=T
     for rev in [False,True]:
      for lens in [None,L]:
       kw=dict(lengths=lens,reverse=rev)
       if cell=='lstm': kw.update(activation=act,w_hr=whr); args=(x,wih,whh,bih,bhh,h0,c0)
       elif cell=='rnn': kw['nonlinearity']=act; args=(x,wih,whh,bih,bhh,h0)
       else: args=(x,wih,whh,bih,bhh,h0)
       a=getattr(ops,cell+'_forward')(*args,training=True,**kw); r=getattr(ref,cell+'_forward')(*args,**kw)
       dout=rng.standard_normal(a[0].shape).astype(dt); dh=rng.standard_normal((B,PP)).astype(dt)
       ex=(dh,) if cell!='lstm' else (dh,rng.standard_normal((B,H)).astype(dt))
       g=getattr(ops,cell+'_backward')(a[-1],dout,*ex); rg=getattr(ref,cell+'_backward')(r[-1],dout,*ex)
       errs={n:np.abs(p-q).max()/max(1,np.abs(q).max()) for n,p,q in zip(['out','h_n','c_n'],a[:-1],r[:-1]) if q is not None}
       errs.update({k:np.abs(g[k]-rg[k]).max()/max(1,np.abs(rg[k]).max()) for k in rg})
       key=(cell+('-'+act if cell!='gru' else ''),np.dtype(dt).name)
       fw=max(v for k,v in errs.items() if k in('out','h_n','c_n')); bw=max(v for k,v in errs.items() if k not in('out','h_n','c_n'))
       o=worst.get(key,(0,0)); worst[key]=(max(o[0],fw),max(o[1],bw))
for k,v in sorted(worst.items()): print(f"{k[0]:10s} {k[1]:8s} forward {v[0]:.1e}  gradients {v[1]:.1e}")
