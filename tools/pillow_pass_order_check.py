# Checks the Pillow 13 pass-order rule used by datasets/src/image/resample.rs (vertical pass first
# iff in_h - out_h > 0 and in_h - out_h > 2 * (in_w - out_w)) against PIL.Image.resize on random
# RGB images of random sizes, with a numpy copy of the fixed-point bicubic passes. Needs pillow==13.0.0.
import numpy as np, random
from PIL import Image
PB=22
def bic(x):
    a=-0.5; x=abs(x)
    if x<1: return ((a+2)*x-(a+3))*x*x+1
    if x<2: return (((x-5)*x+8)*x-4)*a
    return 0.0
def coeffs(i,o):
    scale=i/o; fs=max(scale,1.0); sup=2.0*fs; out=[]
    for xx in range(o):
        c=(xx+0.5)*scale; xmin=max(int(c-sup+0.5),0); xmax=min(int(c+sup+0.5),i)
        k=[bic((x+xmin-c+0.5)*(1.0/fs)) for x in range(xmax-xmin)]; ww=sum(k)
        if ww!=0: k=[w/ww for w in k]
        out.append((xmin,[int(-0.5+w*(1<<PB)) if w<0 else int(0.5+w*(1<<PB)) for w in k]))
    return out
def pass1(a,o,axis):
    a=np.moveaxis(a,axis,0).astype(np.int64); res=[]
    for xmin,k in coeffs(a.shape[0],o):
        acc=np.full(a.shape[1:],1<<(PB-1),dtype=np.int64)
        for j,w in enumerate(k): acc+=a[xmin+j]*w
        res.append(np.clip(acc>>PB,0,255))
    return np.moveaxis(np.stack(res),0,axis).astype(np.uint8)
def ours(a,w,h,vfirst):
    H,W=a.shape[:2]
    if vfirst:
        if h!=H: a=pass1(a,h,0)
        if w!=W: a=pass1(a,w,1)
    else:
        if w!=W: a=pass1(a,w,1)
        if h!=H: a=pass1(a,h,0)
    return a
rule=lambda iw,ih,ow,oh: (ih-oh)>0 and (ih-oh)>(iw-ow)*2
random.seed(0); bad=0; n=0; diffs=0
for t in range(300):
    iw,ih=random.randint(5,90),random.randint(5,90); ow,oh=random.randint(3,90),random.randint(3,90)
    a=np.random.RandomState(t).randint(0,256,(ih,iw,3)).astype(np.uint8)
    pil=np.array(Image.fromarray(a).resize((ow,oh),Image.BICUBIC))
    r=rule(iw,ih,ow,oh); mine=ours(a,ow,oh,r); other=ours(a,ow,oh,not r)
    n+=1; bad+= not np.array_equal(pil,mine); diffs+= not np.array_equal(mine,other)
print("cases",n,"mismatch with rule",bad,"cases where order matters",diffs)
